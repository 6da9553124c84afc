"""Distributed runtime: Ray, placement groups, worker groups. A map:

* :mod:`.config`          -- ``ClusterConfig`` (``cluster:``: nodes, slots, colocated or per-role
  ``*_gpu_ids``), ``parse_gpu_ids``, ``apply_gpu_id_flags`` (seed 001's ``--<role>_gpu_ids`` flags)
* :mod:`.ray_init`        -- ``init_ray``: attach to a cluster or start a local one; the
  environment every worker gets (``worker_env_vars``)
* :mod:`.virtual_cluster` -- ``RayVirtualCluster``: one placement group per node, ``Slot`` s per role
* :mod:`.worker_group`    -- ``RayWorkerGroup``: one actor per slot with the ``torch.distributed``
  environment, ``call_all`` / ``call_sharded`` / ``call_rank``, ``WorkerDiedError`` and
  ``WorkerCallError`` naming role and rank

Order of use: ``init_ray(cfg.cluster)`` -> ``RayVirtualCluster(cfg.cluster)`` -> typed groups
(``PolicyWorkerGroup``, ``GenerationWorkerGroup``) built on ``RayWorkerGroup``.
"""
