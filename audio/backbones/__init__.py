"""TTS backbones behind one interface (`base.TTSBackbone`), and the registry `--backbone NAME` reads."""
