"""The bundled generative family ``kjv-gpt``: four GPT-2-style sizes trained on the KJV Bible.

corpus (chapters and their split) → tokenizer (byte-level BPE) → architecture (HF configs) →
prompts/data (next-word prompts shipped with the package) → train/family (the resumable run)
→ evaluate (greedy next-word accuracy).
"""
