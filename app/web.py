"""The Gradio app (`ttslens app`): UI only; every action calls audio/, autointerp/ or sae/.

Four tabs (app/tabs.py, one function each): synthesize & steer (default vs steered audio, their
measures, the edits, the steered features' activations), the feature browser (autointerp.browse),
dose-response sweeps (audio.steering.evaluate) and text-LLM steering (sae.lm.steer). `Studio`
(app/studio.py) holds the loaded models and has one plain method per action; app/render.py draws cards
and figures. gradio is imported inside functions only: the CLI imports `AppConfig` at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ttslens.sae.errors import BadInput

if TYPE_CHECKING:
    from ttslens.app.studio import Studio


@dataclass
class AppConfig:
    """The web app: synthesize & steer, the feature browser, dose-response sweeps, text-LLM steering.
    Serves on 127.0.0.1 (this machine only) unless --host says otherwise; never a public share link
    unless --share."""

    backbone: str = "demo"
    """TTS backbone name or `ttslens demo build` directory."""
    model_dir: str = ""
    """The backbone's model directory or hub id (e.g. the Fun-CosyVoice3-0.5B-2512 files for cosyvoice3); the
    same as --backbone NAME:DIR."""
    sae: list[str] = field(default_factory=list)
    """SAE directories on that backbone (one per layer); their labels (SAE_DIR/labels) feed the browser."""
    device: str = "cpu"
    """Torch device for the backbone, the text LM and the SAEs: cpu, cuda, cuda:N or auto."""
    dtype: str = "float32"
    """Backbone weights' dtype: float32, bfloat16 or float16."""
    flow_dir: str = ""
    """Optional: a directory of SAEs of this backbone, one per layer and hook (`ttslens flow --sae-dir`), for the
    feature browser's flow graphs (default: the --sae SAEs)."""
    text_model: str = ""
    """Optional: a Hugging Face causal LM (hub id or local directory) for the text-LLM tab."""
    text_sae: list[str] = field(default_factory=list)
    """SAE directories trained on --text-model (for the text-LLM tab)."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 exposes the app to your network)."""
    port: int = 7860
    """Port."""
    share: bool = False
    """Ask Gradio for a public share link (off by default)."""
    concurrency: int = 2
    """Jobs run at once; further users wait in the queue."""
    queue_size: int = 64
    """Requests that may wait in the queue (more are refused with a message)."""
    work_dir: str = ""
    """Where the app writes its files (sweep outputs, Gradio's cache); default: a new temporary directory."""


def build_app(cfg: AppConfig, studio: Studio | None = None):
    """The gradio.Blocks page over a `Studio` (loaded from `cfg` unless given): a header and the four tabs."""
    import gradio as gr

    from ttslens.app import tabs
    from ttslens.app.studio import Studio

    studio = studio or Studio(cfg)
    no_sae = "" if studio.tts.saes else " · no SAE loaded (`--sae DIR` to steer)"
    with gr.Blocks(title="ttslens") as demo:
        gr.Markdown(f"## ttslens · backbone `{cfg.backbone}`{no_sae}")
        with gr.Tabs():
            tabs.synthesize_tab(studio)
            tabs.browser_tab(studio)
            tabs.dose_tab(studio)
            tabs.text_tab(studio)
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
    demo.studio = studio
    return demo


def run_app(cfg: AppConfig) -> dict:
    """Serve the app on cfg.host:cfg.port until interrupted (Ctrl-C)."""
    if cfg.concurrency < 1 or cfg.queue_size < 1:
        raise BadInput("--concurrency and --queue-size must be at least 1")
    from ttslens.app.render import CSS
    from ttslens.app.studio import Studio

    studio = Studio(cfg)
    os.environ["GRADIO_TEMP_DIR"] = str(studio.work / "gradio")  # Gradio's file cache: under the work dir too
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(cfg, studio)
    try:
        _app, url, share_url = demo.launch(
            server_name=cfg.host,
            server_port=cfg.port,
            share=cfg.share,
            prevent_thread_lock=True,
            quiet=True,
            ssr_mode=False,
            allowed_paths=[str(studio.work)],
            css=CSS,
        )
    except OSError as e:
        raise BadInput(f"cannot serve on {cfg.host}:{cfg.port} ({e}): pass another --port") from None
    print(f"ttslens app: {url}" + (f" (public: {share_url})" if share_url else ""), flush=True)
    print(f"ttslens app: work files in {studio.work}; Ctrl-C stops", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return {"url": url, "share_url": share_url, "work_dir": str(studio.work)}
