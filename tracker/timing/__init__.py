"""When notifications fall due: shard leases, the live shard layout, the sweeper, its
housekeeping.
"""
