"""Graph passes over one onnx-graphsurgeon graph. Each module has one entry point ``run(ctx)``; their order
is written once, here."""
from . import (approximate_maxpool, check_ops, drop_classifier_outputs, drop_output_softmax, fold_batchnorm, fold_constants, fold_shape_arithmetic, pool_before_neuron,
               remove_identity, rewrite_activations, spike_readout)

PASSES = [
    remove_identity,       # Dropout/Identity gone
    fold_constants,        # constant subgraphs (incl. static shape arithmetic) become initializers
    fold_shape_arithmetic, # Shape -> ... -> Reshape on a symbolic batch size: constants, Reshape targets with 0/-1
    fold_batchnorm,        # BatchNormalization folded into Conv/Gemm, or a per-channel Mul+Add
    drop_classifier_outputs,  # label outputs (ArgMax of the scores) dropped, ZipMap outputs hold the scores (reported)
    drop_output_softmax,   # Softmax/LogSoftmax at graph outputs removed (reported)
    pool_before_neuron,    # Act -> MaxPool becomes MaxPool -> Act where exact (static input), or with maxpool="pre"
    approximate_maxpool,   # only with maxpool="avg": MaxPool -> AveragePool (reported as approximated)
    check_ops,             # every remaining op has a policy that lets it pass; else a clear refusal
    rewrite_activations,   # Relu/Clip(0, c) -> Clip(0, bound): the activation layers to calibrate
    spike_readout,         # only with readout="spikes": one more activation layer on every graph output
]
