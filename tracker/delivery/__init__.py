"""Getting notifications to the user: reading the shard streams, holding, re-checking, sending,
acknowledging.
"""
