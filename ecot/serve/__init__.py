"""Policy server and torch-free client for ECoT policies (``ecot serve``).

* :mod:`ecot.serve.protocol`: wire formats (msgpack-numpy, json-numpy) and input validation;
* :mod:`ecot.serve.client`: :class:`~ecot.serve.client.PolicyClient`, the robot-side client (no torch);
* :mod:`ecot.serve.app`: the FastAPI app (REST ``/act`` and ``/v1/act``, websocket ``/``, streaming, viewer);
* :mod:`ecot.serve.worker`: the single model worker that batches requests into ``step_batch``;
* :mod:`ecot.serve.cli`: ``ecot serve``.

Importing this package imports nothing heavy (no torch), so the client stays light.
"""
