"""The ``onnx2snn`` command line: demo, convert, run, evaluate, inspect, export-nir, serve.

Exit codes: 0 success; 2 bad input or usage (one line on stderr starting ``error:`` naming the file, node or
argument); 1 an internal fault. Output files are written atomically.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter

import numpy as np

from runtime import InferenceSession
from runtime import format as fmt
from runtime.engine import PRECISIONS
from runtime.errors import InputError, Onnx2SnnError
from runtime.session import check_feeds

from . import progress as progress_module
from .convert import SELECTION_NOTE, convert, model_inputs
from .data import labels, load_array_file, model_feeds
from .datasets import load_folder, parse_floats
from .evaluate import evaluate, plot, table
from .sweep import sweep, sweep_table
from .thresholds import METHODS_HELP
from .writer import write_bytes_atomic

DEMO_MODELS = ("mnist_vgg", "mnist_resnet", "digits_cnn", "digits_maxpool")
# The demo answers quickly by default; --full runs the sweep of earlier releases (docs/guide.md has the trade-off).
DEMO_TIMESTEPS, DEMO_CALIB_IMAGES = "4,8,16", 128
DEMO_FULL_TIMESTEPS = "4,8,16,32,64,128"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _timesteps_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 4,8,16, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 4,8,16, got {text!r}")
    return values


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected milliseconds from 0 to 10000, got {text!r}")
    return value


def _word_or_number(*words: str):
    """An argparse type accepting one of ``words`` or a number (--shift, --v-init)."""
    def parse(text: str):
        if text in words:
            return text
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {', '.join(repr(w) for w in words)} or a number, got {text!r}") from None
    return parse


_shift = _word_or_number("half", "none")
_v_init = _word_or_number("half", "calibrated")
SPIKES = {"unsigned": False, "signed": True, "auto": None}  # --spikes -> convert(signed_spikes=...)


def _add_conversion_options(p: argparse.ArgumentParser, default_threshold: str = "optimal") -> None:
    p.add_argument("--threshold", default=default_threshold, help=f"V_th: {METHODS_HELP} (default %(default)s)")
    p.add_argument("--shift", type=_shift, default=None, help="current shift per step: half (V_th/2T), none, or a number (default: none for optimal and ltb, half otherwise)")
    p.add_argument("--reset", choices=fmt.RESETS, default="subtract", help="reset after a spike (default %(default)s)")
    p.add_argument("--spikes", choices=list(SPIKES), default="unsigned",
                   help="unsigned: the paper's IF neurons; signed: a neuron whose membrane falls below 0 takes a spike back "
                        "(a negative spike; format extension, docs/format.md; not exportable to NIR); auto: optimal's final "
                        "selection tries both (twice the calibration time) (default %(default)s)")
    p.add_argument("--burst", type=_positive_int, default=1, metavar="B",
                   help="most spikes a neuron may fire in one step: 1 is the paper's neuron; B > 1 writes burst neurons "
                        "(a spike of k * V_th, k <= B; for small T; format extension, docs/format.md; optimal only; not "
                        "exportable to NIR) (default %(default)s)")
    p.add_argument("--v-init", type=_v_init, default=None,
                   help="initial membrane: a number, half (V_th/2) or calibrated (per channel; optimal only) (default: half for optimal and ltb, 0 otherwise)")
    p.add_argument("--no-bias-correction", dest="bias_correction", action="store_false", default=None,
                   help="optimal only: do not add the per-channel shift that cancels the mean conversion error "
                        "(default: on, or chosen by the final selection)")
    p.add_argument("--no-select", dest="select", action="store_false",
                   help="optimal only: no final selection; by default every combination of the knobs left unset "
                        "(bias correction on/off; v_init half/calibrated and ltb for T <= 2; plain/signed neurons with --spikes auto) "
                        "is simulated on the calibration data "
                        "and the one whose output agrees best with the ANN is kept")
    p.add_argument("--maxpool", choices=["gate", "avg", "pre"], default="gate",
                   help="MaxPool on spikes: gate (spiking max pool, exact in the limit), avg (approximate by AveragePool, reported) "
                        "or pre (pool the currents before the neuron instead, approximate, reported)")
    p.add_argument("--readout", choices=["membrane", "spikes"], default="membrane",
                   help="what the outputs give: membrane (their mean over T, the logits up to the conversion error) or spikes "
                        "(one more neuron layer on every output, read out by its spike count; reported) (default %(default)s)")
    p.add_argument("--readout-start", type=_non_negative_int, default=0, metavar="STEPS",
                   help="delayed readout: the outputs are averaged over the steps after this many (stored in the file) "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="calibration batch size (default %(default)s)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or tables, errors only")


def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="float32: float32 sums in a fixed order, deterministic for any thread count (fast); float64: the exact "
                        "engine of earlier releases, equal to the NumPy reference bit for bit (slower) (default float32; "
                        "the reference engine: float64)")


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the SNN on a Ray cluster: HOST:PORT of its head, 'auto', or nothing for a local one (needs onnx2snn[ray])")
    p.add_argument("--workers", type=_positive_int, default=None, help="with --ray: Ray actors, one session each (default: all CPUs)")
    p.add_argument("--threads-per-worker", type=_positive_int, default=1, help="with --ray: Numba threads per actor (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnx2snn", description="Convert ONNX ANNs to spiking neural networks and run them on CPU.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal faults")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="convert the bundled MNIST CNN and compare ANN and SNN accuracy per T",
                       description="Convert a bundled model and compare ANN and SNN accuracy per T on its held-out images. "
                                   f"Quick by default: T = {DEMO_TIMESTEPS}, converted on the first {DEMO_CALIB_IMAGES} calibration "
                                   "images (the SNN-side calibration and the final selection see fewer samples; see --full). "
                                   f"--full: T = {DEMO_FULL_TIMESTEPS} on every calibration image, several times longer.")
    p.add_argument("--model", choices=DEMO_MODELS, default="mnist_vgg", help="bundled model (default %(default)s)")
    p.add_argument("--full", action="store_true",
                   help=f"the full sweep of earlier releases: T = {DEMO_FULL_TIMESTEPS}, converted on every calibration image "
                        f"(82-91 s on an idle 2-core machine before the quick default). The quick default runs T = {DEMO_TIMESTEPS} "
                        f"and converts on the first {DEMO_CALIB_IMAGES} calibration images: the SNN-side calibration and the final "
                        "selection see fewer samples (mnist_vgg: the same accuracies within one image; mnist_resnet: 13 images "
                        "fewer at T=16; docs/guide.md)")
    p.add_argument("--timesteps", type=_timesteps_list, default=None,
                   help=f"comma-separated T values (default {DEMO_TIMESTEPS}; {DEMO_FULL_TIMESTEPS} with --full)")
    p.add_argument("--calib-limit", type=_positive_int, default=None, metavar="N",
                   help=f"convert on the first N calibration images (default {DEMO_CALIB_IMAGES}; all with --full)")
    p.add_argument("--limit", type=int, default=0, help="evaluate on the first N held-out samples only (default: all)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--json", metavar="RESULTS.json", help="also write the results as JSON")
    p.add_argument("--plot", metavar="ACC.png", help="also plot accuracy vs T")
    _add_precision(p)
    _add_conversion_options(p)
    _add_common(p)

    p = sub.add_parser("convert", help="convert an ONNX ANN into an SNN description (.snn.onnx)")
    p.add_argument("model", help="the source ANN (.onnx)")
    p.add_argument("--calib", required=True, help="calibration data: .npy (single input) or .npz keyed by input name")
    p.add_argument("-o", "--output", required=True, help="the SNN file to write (.snn.onnx)")
    p.add_argument("--timesteps", type=_positive_int, default=32, help="T the SNN is converted for (default %(default)s)")
    p.add_argument("--ann-out", help="also write the threshold-ReLU ANN (plain ONNX)")
    p.add_argument("--report", help="write the conversion report as JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    _add_conversion_options(p)
    _add_common(p)

    p = sub.add_parser("run", help="run an SNN description on input data")
    p.add_argument("model", help="the SNN file (.snn.onnx)")
    p.add_argument("--input", required=True, help="input data: .npy (single input) or .npz keyed by input name")
    p.add_argument("--timesteps", type=_positive_int, default=None, help="T (default: the T the file was converted for)")
    p.add_argument("--output", help="write the first output (rate readout) as .npy")
    p.add_argument("--stats", help="write per-layer spike statistics as JSON")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--engine", choices=["auto", "event", "dense", "reference", "numba"], default="auto",
                   help="auto: event-driven or dense per layer from the spike density; event/dense: one path; reference: NumPy (default %(default)s)")
    p.add_argument("--early-stop", type=_positive_int, default=None, metavar="K",
                   help="stop once every sample's top-1 class has been stable for K steps; reports the steps used")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_precision(p)
    _add_ray_options(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="ANN vs threshold-ANN vs SNN accuracy for several T")
    p.add_argument("model", help="the source ANN (.onnx)")
    p.add_argument("--calib", required=True, help="calibration data: .npy or .npz")
    p.add_argument("--data", required=True, help="evaluation data: .npz with the input array(s) and integer labels 'y', a CIFAR-10/100 "
                                                 "binary folder, or an image folder (labels.txt or one sub-folder per class)")
    p.add_argument("--mean", help="per-channel mean subtracted from folder images after scaling to [0, 1], e.g. 0.4914,0.4822,0.4465")
    p.add_argument("--std", help="per-channel std dividing folder images, e.g. 0.247,0.243,0.261")
    p.add_argument("--split", choices=["test", "train"], default="test", help="CIFAR split to read from a folder (default %(default)s)")
    p.add_argument("--limit", type=_positive_int, default=None, help="evaluate on the first N samples only")
    p.add_argument("--timesteps", type=_timesteps_list, default=_timesteps_list("4,8,16,32,64"), help="comma-separated T values (default 4,8,16,32,64)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--plot", metavar="ACC.png", help="plot accuracy vs T")
    p.add_argument("--json", metavar="RESULTS.json", help="write the results as JSON")
    p.add_argument("--sweep-thresholds", metavar="M1,M2,...", type=lambda text: [m for m in text.split(",") if m.strip()],
                   help="one table per threshold method over all --timesteps (with --ray: the whole grid at once), e.g. max,p99.9,optimal")
    _add_precision(p)
    _add_ray_options(p)
    _add_conversion_options(p)
    _add_common(p)

    p = sub.add_parser("inspect", help="ops and their policy, layers, V_th, metadata of an ANN or SNN file")
    p.add_argument("model", help="an ONNX ANN or an SNN file")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="SNN file only: plot per-layer activation distributions with the chosen V_th, "
                   "and per-layer firing rates (needs --calib)")
    p.add_argument("--calib", help="for --plot: data (.npy or .npz) to run the SNN on and, with --ann, the ANN")
    p.add_argument("--ann", metavar="MODEL.onnx", help="for --plot: the source ANN, whose activations are plotted against V_th "
                   "(default: the SNN's own rates are plotted only)")
    _add_common(p)

    p = sub.add_parser("export-nir", help="export an SNN file to NIR (needs pip install 'onnx2snn[nir]'); says what NIR cannot express")
    p.add_argument("model", help="the SNN file (.snn.onnx)")
    p.add_argument("-o", "--output", required=True, help="the NIR file to write (.nir, HDF5)")
    p.add_argument("--strict", action="store_true", help="refuse (exit 2) instead of warning when NIR loses something")
    p.add_argument("--json", action="store_true", help="print the summary and warnings as JSON")
    _add_common(p)

    p = sub.add_parser("serve", help="serve SNN files over HTTP with the Open Inference Protocol (KServe v2), dynamic batching and "
                                     "Prometheus metrics (needs pip install 'onnx2snn[serve]'; docs/serving.md)")
    p.add_argument("models", nargs="+", metavar="MODEL.snn.onnx", help="the SNN files to serve; each is named after its file without .snn.onnx")
    p.add_argument("--name", action="append", default=None, help="a model's name instead of its file name; repeat once per model, in order")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default %(default)s: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="HTTP port; 0 takes a free one (default %(default)s)")
    p.add_argument("--timesteps", type=_positive_int, default=None, help="T of requests that do not set parameters.timesteps "
                                                                      "(default: the T each file was converted for)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads per run (default: all cores; with --ray: 1 per replica)")
    p.add_argument("--max-batch", type=_positive_int, default=64, help="dynamic batching: most samples in one run (default %(default)s)")
    p.add_argument("--max-delay-ms", type=_milliseconds, default=5.0, help="dynamic batching: longest wait for more requests after the "
                                                                            "first, in ms (default %(default)s)")
    p.add_argument("--max-timesteps", type=_positive_int, default=1024, help="largest T a request may ask for (default %(default)s)")
    p.add_argument("--max-body-mb", type=_positive_int, default=64, help="largest request body, in MiB (default %(default)s)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="serve with Ray Serve instead: HOST:PORT of a cluster's head, 'auto', or nothing for a local one (needs onnx2snn[ray])")
    p.add_argument("--replicas", type=_positive_int, default=None, help="with --ray: Ray Serve replicas, one session each (default 1)")
    _add_common(p)
    return parser


def _say(args, text: str) -> None:
    if not args.quiet:
        print(text)


def _write_json(path: str, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _conversion_kwargs(args) -> dict:
    return {"threshold": args.threshold, "shift": args.shift, "reset": args.reset, "v_init": args.v_init, "batch_size": args.batch_size,
            "signed_spikes": SPIKES[args.spikes], "burst": args.burst,
            "bias_correction": args.bias_correction, "select": args.select, "maxpool": args.maxpool,
            "readout": args.readout, "readout_start": args.readout_start}


def cmd_convert(args) -> int:
    calib = load_array_file(args.calib)
    snn = convert(args.model, calib, timesteps=args.timesteps, progress=None if not args.quiet else False, **_conversion_kwargs(args))
    snn.save(args.output)
    if args.ann_out:
        snn.save_ann(args.ann_out)
    if args.report:
        _write_json(args.report, snn.report.to_dict())
    if args.json:
        print(snn.report.to_json())
    else:
        _say(args, snn.report.table())
        _say(args, f"wrote {args.output} ({len(snn.thresholds)} neuron layers, T={args.timesteps}, threshold {args.threshold})")
    return 0


def _ray_cluster(args, engine: str = "auto"):
    """A ``RayCluster`` for --ray (closed on exit), else a null context: the local path is left as it was."""
    if args.ray is None:
        if args.workers is not None or args.threads_per_worker != 1:
            raise InputError("--workers and --threads-per-worker need --ray")
        return contextlib.nullcontext()
    if args.threads is not None:
        raise InputError("--threads sets a local run's threads; with --ray use --threads-per-worker")
    from runtime.distributed import RayCluster
    return RayCluster(args.ray or None, args.workers, args.threads_per_worker, engine=engine, progress=None if not args.quiet else False,
                      precision=args.precision)


def _session_factory(args):
    """InferenceSession(model, threads=...) with the command's --precision."""
    return functools.partial(InferenceSession, precision=args.precision)


def cmd_run(args) -> int:
    with _ray_cluster(args, args.engine) as cluster:
        return _run(args, cluster)


def _run(args, cluster) -> int:
    session = cluster.session(args.model) if cluster else InferenceSession(args.model, threads=args.threads, engine=args.engine,
                                                                             precision=args.precision)
    data = load_array_file(args.input)
    feeds = model_feeds(data, [i.name for i in session.get_inputs()], args.input)
    start = time.perf_counter()
    outputs = session.run(None, feeds, timesteps=args.timesteps, early_stop=args.early_stop)
    seconds = time.perf_counter() - start
    if args.output:
        buffer = _npy_bytes(outputs[0])
        write_bytes_atomic(args.output, buffer)
    if args.stats:
        _write_json(args.stats, session.stats)
    summary = {"outputs": {o.name: list(v.shape) for o, v in zip(session.get_outputs(), outputs)},
               "timesteps": session.stats["timesteps"], "seconds": seconds, "stats": session.stats}
    if args.json:
        print(json.dumps(summary, indent=2, default=_json_default))
    else:
        _say(args, stats_table(session.stats))
        used = f" (early stop: {session.stats['steps_used']} steps used)" if args.early_stop else ""
        _say(args, f"ran {session.stats['batch']} samples x T={session.stats['timesteps']}{used} in {seconds:.3f} s"
                   + (f"; wrote {args.output}" if args.output else ""))
    return 0


def _npy_bytes(array: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def stats_table(stats: dict) -> str:
    lines = [f"{'layer':<36} {'neurons':>9} {'spikes':>12} {'rate':>8} {'SynOps':>12} {'dense MACs':>12} {'time (s)':>9}"]
    for layer in stats["layers"]:
        lines.append(f"{layer['layer'][:36]:<36} {layer['neurons']:>9} {layer['spikes']:>12} {layer['firing_rate']:>8.4f} "
                     f"{layer['synops']:>12.3e} {layer.get('dense_macs', 0):>12.3e} {layer['time_s']:>9.3f}")
    energy = stats["energy_estimate_uj"]
    lines.append(f"total spikes {stats['total_spikes']}, SynOps {stats['total_synops']:.3e}; "
                 f"energy estimate (45 nm, not a measurement): SNN {energy['snn']:.2f} uJ vs ANN {energy['ann']:.2f} uJ per batch")
    return "\n".join(lines)


def _evaluation_data(args, inputs, model) -> tuple[dict, np.ndarray]:
    """Feeds and labels from an .npz, a CIFAR binary folder or an image folder (``--data``)."""
    path = args.data
    if os.path.isdir(path):
        if len(inputs) != 1:
            raise InputError(f"{path}: a data folder feeds single-input models only; this model has {len(inputs)} inputs")
        x, y = load_folder(path, inputs[0].shape, parse_floats(args.mean), parse_floats(args.std), args.split, args.limit)
        data, feeds = {"y": y}, {inputs[0].name: x}
    else:
        data = load_array_file(path)
        feeds = model_feeds(data, [i.name for i in inputs], path)
        if args.limit:
            feeds = {k: v[:args.limit] for k, v in feeds.items()}
            if isinstance(data, dict) and "y" in data:
                data = dict(data, y=data["y"][:args.limit])
    n = len(next(iter(feeds.values())))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    n_classes = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    return feeds, labels(data, path, n, n_classes)


def cmd_evaluate(args) -> int:
    calib = load_array_file(args.calib)
    snn = convert(args.model, calib, timesteps=max(args.timesteps), progress=None if not args.quiet else False, **_conversion_kwargs(args))
    inputs = model_inputs(snn.model)
    feeds, y = _evaluation_data(args, inputs, snn.model)
    if args.sweep_thresholds is not None and (args.plot or not args.sweep_thresholds):
        raise InputError("--sweep-thresholds needs one or more methods and writes no --plot (use --json)")
    show = None if not args.quiet else False
    with _ray_cluster(args) as cluster:
        if args.sweep_thresholds:
            results = sweep(snn, args.model, check_feeds(inputs, feeds), y, args.timesteps, args.sweep_thresholds, cluster, args.threads, show,
                            _session_factory(args))
            if args.json:
                _write_json(args.json, results)
            _say(args, sweep_table(results) + (f"\nwrote {args.json}" if args.json else ""))
            return 0
        results = evaluate(snn, args.model, check_feeds(inputs, feeds), y, args.timesteps, args.threads, show,
                           cluster.session if cluster else _session_factory(args))
    _finish_evaluation(args, results)
    return 0


def _finish_evaluation(args, results: dict) -> None:
    if args.json:
        _write_json(args.json, results)
    if args.plot:
        plot(results, args.plot)
    _say(args, table(results))
    for path in filter(None, [args.json, args.plot]):
        _say(args, f"wrote {path}")


def cmd_demo(args) -> int:
    from .assets import bundled_path
    model = str(bundled_path(f"{args.model}.onnx"))
    prefix = args.model.split("_")[0]
    calib = load_array_file(str(bundled_path(f"{prefix}_calib.npz")))["image"]
    calib = calib[:args.calib_limit or (len(calib) if args.full else DEMO_CALIB_IMAGES)]
    timesteps = args.timesteps or _timesteps_list(DEMO_FULL_TIMESTEPS if args.full else DEMO_TIMESTEPS)
    data = load_array_file(str(bundled_path(f"{prefix}_eval.npz")))
    feeds, y = {"image": data["image"]}, data["y"]
    if args.limit and args.limit > 0:
        feeds, y = {"image": feeds["image"][:args.limit]}, y[:args.limit]
    _say(args, f"onnx2snn demo: {args.model}.onnx (bundled), {len(calib)} calibration and {len(y)} held-out images, T = "
               f"{','.join(map(str, timesteps))}" + ("" if args.full else " (quick; --full for the full sweep)"))
    start = time.perf_counter()
    snn = convert(model, calib, timesteps=max(timesteps), progress=None if not args.quiet else False, **_conversion_kwargs(args))
    settings = snn.report.settings
    chosen = any(n.startswith(SELECTION_NOTE) for n in snn.report.notes)  # then v_init and bias correction depend on T
    knobs = "v_init and bias correction chosen per T by the final selection" if chosen else f"v_init {settings['v_init']}"
    _say(args, f"converted in {time.perf_counter() - start:.2f} s: {len(snn.thresholds)} neuron layers, threshold {settings['threshold']}, "
               f"shift {settings['shift']}, {knobs}, reset {settings['reset']}" + (", signed spikes" if settings["signed_spikes"] else "")
               + (f", bursts of up to {settings['burst']} spikes" if settings["burst"] > 1 else ""))
    results = evaluate(snn, model, feeds, y, timesteps, args.threads, None if not args.quiet else False, _session_factory(args))
    _finish_evaluation(args, results)
    return 0


def cmd_inspect(args) -> int:
    from .describe import inspect_file, plot_layers
    if (args.calib or args.ann) and not args.plot:
        raise InputError("--calib and --ann are used by --plot only; add --plot OUT.png")
    info, text = inspect_file(args.model)
    if args.plot:
        info["plot"] = plot_layers(args.model, args.plot, args.calib, args.ann, info)
    if args.json:
        print(json.dumps(info, indent=2, default=_json_default))
    else:
        _say(args, text)
        if args.plot:
            _say(args, f"wrote {args.plot}")
    return 0


def cmd_export_nir(args) -> int:
    from .nir_export import export_nir
    exported = export_nir(args.model, strict=args.strict)
    exported.save(args.output)
    for warning in exported.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    graph = exported.graph
    summary = {"file": args.output, "nodes": {k: type(v).__name__ for k, v in graph.nodes.items()},
               "edges": [list(e) for e in graph.edges], "warnings": exported.warnings}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        kinds = Counter(summary["nodes"].values())
        _say(args, f"wrote {args.output}: {len(graph.nodes)} NIR nodes ({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))}), "
                   f"{len(graph.edges)} edges, {len(exported.warnings)} warnings (stored in the file's metadata)")
    return 0


def cmd_serve(args) -> int:
    from runtime import serving
    serving.require()
    limits = serving.Limits(args.max_batch, args.max_delay_ms, args.max_timesteps, args.max_body_mb << 20)
    if args.timesteps is not None and args.timesteps > args.max_timesteps:
        raise InputError(f"--timesteps {args.timesteps} is above --max-timesteps {args.max_timesteps}")
    if args.ray is None:
        if args.replicas is not None:
            raise InputError("--replicas needs --ray")
        server = serving.Server(args.models, args.name, args.host, args.port, args.timesteps, args.threads, limits)
        _say(args, f"serving {', '.join(server.models)} at {server.url} (Open Inference Protocol v2; "
                   f"ready: {server.url}/v2/health/ready, metrics: {server.url}/metrics); Ctrl-C stops")
        sys.stdout.flush()
        server.serve_forever()
    else:
        from runtime.serving.ray_serve import run_on_ray
        run_on_ray(args.models, args.name, args.ray or None, args.host, args.port, args.replicas or 1, args.timesteps,
                   args.threads or 1, limits, say=lambda text: (_say(args, text), sys.stdout.flush()))
    _say(args, "onnx2snn serve: stopped")
    return 0


COMMANDS = {"demo": cmd_demo, "convert": cmd_convert, "run": cmd_run, "evaluate": cmd_evaluate, "inspect": cmd_inspect,
            "export-nir": cmd_export_nir, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already reported on stderr)
        return int(exc.code or 0)
    progress_module.QUIET = getattr(args, "quiet", False)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends like Ctrl-C: outputs are only ever renamed into place
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except Onnx2SnnError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no output file was written or replaced", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; use a smaller batch or fewer time steps", file=sys.stderr)
        return 2
    except Exception as exc:  # an internal fault: say so, never a bare traceback unless asked
        if args.debug or os.environ.get("ONNX2SNN_DEBUG"):
            raise
        print(f"error: internal fault ({type(exc).__name__}: {_one_line(exc)[:300]}); rerun with --debug and report it", file=sys.stderr)
        return 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def entry_point() -> None:
    sys.exit(main())


__all__ = ["main", "entry_point", "build_parser", "InputError"]
