"""Threads: how a node's work is cut into parts, and the pool of threads that runs them.

    parts = row_parts(rows, flops, threads)            # parallel.py: how many parts (1: one thread)
    emit_team_call(function, body, threads, parts, scratch_bytes, target)
    finish_pool(module)                                # thread_pool.py: the pool's code, once per module
"""
