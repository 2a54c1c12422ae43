"""The task-agnostic training kit: the loop (optimizer, schedule, resume, epochs), typed
checkpoints, the sandwich rule, techniques (channel regeneration, Batch Bridgeout), DDP and
finalist recipes. Task-specific trainers live in ``nas_search.tasks``."""
