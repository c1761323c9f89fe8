"""The launcher's backends, one module each, all with the same entry point (driver side)::

    run(spark, payload, num_workers, inputs, output_dir, timeouts, monitor, attempt) -> the chief's value

* :mod:`~tfos_lib.backends.barrier`: Spark barrier mode, each worker in a child process (the default);
* :mod:`~tfos_lib.backends.tfos`: TensorFlowOnSpark's ``TFCluster`` with InputMode.SPARK;
* :mod:`~tfos_lib.backends.local`: one worker in the driver process, for debugging.

``payload`` is ``(train_fn, args)`` from :func:`tfos_lib.process.pickle_with_code`. A
failed worker raises :class:`~tfos_lib.errors.WorkerError`; a missed deadline of the
``monitor`` raises :class:`~tfos_lib.errors.LauncherTimeout`. The launcher
(:func:`tfos_lib.run`) imports the backend it needs; no backend imports the launcher.
"""
