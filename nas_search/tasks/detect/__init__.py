"""Compact detectors with a searchable backbone, neck and head (the ``detect`` task).

* :mod:`.space`: :class:`DetectionSpace` and the registered detection spaces.
* :mod:`.cost`, :mod:`.hardware`, :mod:`.latency`: exact FLOPs and params, peak memory and
  analytic-device layers, latency-table parts of a detector; :mod:`.costs` hands all of
  them to the cost models through the space's ``network_costs`` (nothing is registered).
* :mod:`.neck`, :mod:`.head`, :mod:`.supernet`, :mod:`.static`: the elastic detector and
  the standalone torchvision FCOS it extracts.
* :mod:`.data`, :mod:`.demo_data`: Pascal VOC, COCO JSON and YOLO readers; the built-in demo.
* :mod:`.supernet_training`, :mod:`.evaluate`, :mod:`.finalist`, :mod:`.standalone`:
  training and scoring; :mod:`.task` ties them into the search's :class:`Task`.
"""
