"""Trained steering vectors: one additive vector per layer, trained (likelihood or online RL) with every model
weight frozen, read off the model (logit lens, SAE view) and applied like any other edit.

    vectors.py   the vectors, their file (`vectors.safetensors`, `layer.<L>`), the hook-engine edits
    train.py     VectorConfig, the likelihood and RL (GRPO / RLOO, KL, clipping) objectives, resume
    rewards.py   reward SPECs: regex:, answer, exact, module:function, registered names (the audio ones)
    lm.py        a Hugging Face causal LM as the policy
    readout.py   logit lens, SAE decomposition
    commands.py  `ttslens vectors train | readout | apply` for text LMs (TTS backbones: ttslens.audio.vectors)
"""
