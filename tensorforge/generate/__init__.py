"""Generation with a KV cache: the kv-cache rewrite and tf.compile_generator.

    gen = tf.compile_generator(gpt, max_len=128)
    ids = gen.generate([5, 1, 7], max_new_tokens=20)

    traced: %13 = matmul(%q, %k) {transpose_b=true} ... softmax ... matmul(%17, %v)    (all S positions)
        ->  decode: %18 = cached_attention(%q, %k_cache.0, %v_cache.0, %k, %v, %pos)  (one new position)

attention.py finds the causal attentions and positions of a traced decoder; kv_cache.py makes its
prefill and one-token decode graphs (`rewrite_for_kv_cache`);
compile.py compiles both (compile_generator), generator.py runs them over caches it owns (Generator).
"""

from .attention import Attention, KVCacheError, find_attentions
from .compile import compile_generator, first_token_graph
from .generator import GenerationStats, Generator
from .kv_cache import KVCacheGraphs, quantized_rows, rewrite_for_kv_cache

__all__ = [
    "Attention", "GenerationStats", "Generator", "KVCacheError", "KVCacheGraphs", "compile_generator",
    "find_attentions", "first_token_graph", "quantized_rows", "rewrite_for_kv_cache",
]
