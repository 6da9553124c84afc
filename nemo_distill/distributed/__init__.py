"""Distributed runtime: Ray, placement groups and worker groups.

* :mod:`.config`          -- ``ClusterConfig`` (nodes, slots, colocation, GPU ids per role) and the
  ``--<role>_gpu_ids`` flags
* :mod:`.ray_init`        -- ``init_ray``: attach to ``RAY_ADDRESS`` or start a local cluster
* :mod:`.virtual_cluster` -- ``RayVirtualCluster``: a placement group per node, slots per role
* :mod:`.worker_group`    -- ``RayWorkerGroup``: actors with torch.distributed env, call/shard,
  ``WorkerDiedError`` naming role and rank
"""
