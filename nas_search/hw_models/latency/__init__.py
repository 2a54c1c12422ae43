"""Latency on a device: a lookup table (LUT) of profiled blocks plus a learned correction.

A *device* is a (hardware, runtime) pair, such as this machine's CPU running onnxruntime
on one thread.  Its latency model is built in two steps:

1. **Profile** (:func:`profile_table`, ``nas-search profile``): every distinct block
   configuration the space can produce at its deployment size (the op, input and output
   channels after rounding, hidden channels, kernel, stride, expansion, SCC groups and
   overlap, squeeze-excite width, residual, input size), plus the stem and the head (for
   a detection space: the neck and head parts its ``network_costs.latency_table`` names,
   :mod:`nas_search.tasks.detect.latency`), is built as a standalone module
   (:class:`~.parts.PartKind`, :func:`~.parts.block_module`) and timed
   on its own at batch 1 and a fixed thread count: warm-up runs, then the median of
   repeated samples (the minimum is stored too), the modules of a chunk timed in
   interleaved rounds so that a burst of load from other processes hits all of them
   alike.  Random whole subnets (100 by default) are measured the same way, spread among
   the block chunks so that both see the same drift of the machine's speed.  Everything
   goes into one JSON file recording the device, runtime, threads, library versions, clock
   and date (:class:`LatencyTable`); a half-built table is saved every few seconds and a
   new run resumes where it stopped.  Three measurement rules matter on a shared machine
   (each is explained where it is implemented): the thread-CPU clock with one thread
   (:data:`CLOCKS`), an untimed run before each interleaved sample
   (:func:`time_interleaved`), and denormals flushed to zero (:func:`measurement_settings`).
2. **Predict** (:class:`LatencyModel`): the sum of the table entries of an architecture's
   parts, plus a learned correction in the spirit of nn-Meter: a ridge regression on
   per-block features summed over the network (table latency, fused layers, FLOPs, memory
   traffic, weight bytes) predicting the whole-model latency minus the LUT sum, weighted
   so that it minimises the *relative* error.  It learns what isolated blocks miss: cold
   weights and instruction caches between blocks, per-call overheads counted once.  It is
   refit from the measured subnets stored in the table whenever the table is loaded
   (milliseconds), so the table is plain data and nothing is pickled.

Blocks missing from a partial table (a ``--widths`` subset, or an interrupted profile) are
estimated from the entries of the same kind by a non-negative fit on FLOPs and memory
traffic; :meth:`LatencyModel.predict` says how many parts were estimated.

The number of distinct parts is large (:func:`distinct_blocks`, ``nas-search profile
--count-only``): 27,903 for ``mobile`` at 224 px, 15,723 for ``cifar`` and 9,860 for
``micro`` at 32 px, and 28,358 for ``detect`` at 416 px.  A full ``mobile`` profile
takes hours on one core (ONNX export plus the timing
per block with onnxruntime); it is resumable, and ``--widths
0.25,0.5,1`` gives a quick partial table.

The package, one module per concern:

* :mod:`.parts`: the part catalogue: :class:`BlockConfig`, part kinds, the parts of a
  network, the distinct parts of a space, and :class:`TableTask` (how a space's networks
  are cut into parts: the classifier's, or the one ``space.network_costs`` carries).
* :mod:`.runtimes`: onnxruntime and PyTorch eager on the local CPU.
* :mod:`.timing`: clocks, timing options and interleaved timing.
* :mod:`.table`: the table file (:class:`LatencyTable`, :func:`load_table`).
* :mod:`.profile`: profiling orchestration (:func:`profile_table`, :func:`profile_device`).
* :mod:`.model`: prediction (:class:`LatencyModel`) and the learned correction.
"""

from __future__ import annotations

from nas_search.hw_models.latency.model import (
    CORRECTION_FEATURES,
    MIN_CORRECTION_SUBNETS,
    STATISTICS,
    FlopsProportionalModel,
    LatencyCorrection,
    LatencyModel,
    LatencyPrediction,
    cross_validate,
    fit_correction,
    prediction_metrics,
)
from nas_search.hw_models.latency.parts import (
    BACKBONE_PART_KINDS,
    BLOCK_PART_KIND,
    CLASSIFIER_PART_KINDS,
    CLASSIFIER_TABLE_TASK,
    BlockConfig,
    PartFeatures,
    PartKind,
    PartKinds,
    TableTask,
    backbone_parts,
    block_module,
    build_part,
    build_subnet,
    check_table_input_size,
    distinct_backbone_parts,
    distinct_blocks,
    has_table_support,
    model_parts,
    network_parts,
    part_example,
    part_features,
    part_kinds,
    restrict_widths,
    table_task,
)
from nas_search.hw_models.latency.profile import (
    ProfileOptions,
    ProfileResult,
    count_parts,
    profile_device,
    profile_table,
    sample_subnets,
)
from nas_search.hw_models.latency.runtimes import (
    RUNTIMES,
    Runtime,
    export_onnx_bytes,
    get_runtime,
    local_hardware,
    measurement_settings,
)
from nas_search.hw_models.latency.table import (
    DEFAULT_TABLE_DIR,
    TABLE_FORMAT,
    TABLE_FORMAT_VERSION,
    BlockMeasurement,
    LatencyTable,
    SubnetMeasurement,
    default_table_path,
    load_table,
    table_from_dict,
)
from nas_search.hw_models.latency.timing import (
    CLOCKS,
    Timing,
    TimingOptions,
    example_image,
    measure_modules,
    measure_subnets,
    time_interleaved,
)

__all__ = [
    "BACKBONE_PART_KINDS",
    "BLOCK_PART_KIND",
    "CLASSIFIER_PART_KINDS",
    "CLASSIFIER_TABLE_TASK",
    "CLOCKS",
    "CORRECTION_FEATURES",
    "DEFAULT_TABLE_DIR",
    "MIN_CORRECTION_SUBNETS",
    "RUNTIMES",
    "STATISTICS",
    "TABLE_FORMAT",
    "TABLE_FORMAT_VERSION",
    "BlockConfig",
    "BlockMeasurement",
    "FlopsProportionalModel",
    "LatencyCorrection",
    "LatencyModel",
    "LatencyPrediction",
    "LatencyTable",
    "PartFeatures",
    "PartKind",
    "PartKinds",
    "ProfileOptions",
    "ProfileResult",
    "Runtime",
    "SubnetMeasurement",
    "TableTask",
    "Timing",
    "TimingOptions",
    "backbone_parts",
    "block_module",
    "build_part",
    "build_subnet",
    "check_table_input_size",
    "count_parts",
    "cross_validate",
    "default_table_path",
    "distinct_backbone_parts",
    "distinct_blocks",
    "example_image",
    "export_onnx_bytes",
    "fit_correction",
    "get_runtime",
    "has_table_support",
    "load_table",
    "local_hardware",
    "measure_modules",
    "measure_subnets",
    "measurement_settings",
    "model_parts",
    "network_parts",
    "part_example",
    "part_features",
    "part_kinds",
    "prediction_metrics",
    "profile_device",
    "profile_table",
    "restrict_widths",
    "sample_subnets",
    "table_from_dict",
    "table_task",
    "time_interleaved",
]
