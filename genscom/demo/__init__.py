"""The genscom demo: a Gradio transmitter and receiver, combined or as two processes over HTTP.

Library side of ``genscom demo`` (the CLI and ``apps/demo/`` only call :func:`launch_demo`):

* :mod:`genscom.demo.engine`: :class:`DemoTransmitter` / :class:`DemoReceiver` (no UI);
* :mod:`genscom.demo.wire`: the HTTP wire format (symbols + side information, safetensors);
* :mod:`genscom.demo.guard`: what the receiver checks (signature, replay, size, every field vs. its own config);
* :mod:`genscom.demo.content`: the offline gallery and uploads (:class:`UploadError`);
* :mod:`genscom.demo.tasks`: which schemes serve each task (caption: ``agent``; image regeneration: ``regen``);
* :mod:`genscom.demo.regen`: whether the demo's own image decoder fits its encoder profile;
* :mod:`genscom.demo.generated`, :mod:`genscom.demo.captions`: the caption and regenerated-image panels;
* :mod:`genscom.demo.app`: the Gradio pages and the FastAPI/uvicorn server.

Gradio is an optional dependency (``pip install gradio``); importing this package does not import it.
"""

from genscom.demo.content import DemoItem, UploadError, read_upload
from genscom.demo.engine import DemoConfig, DemoReceiver, DemoTransmitter, TxSettings, optional_features
from genscom.demo.wire import WireMessage, decode_message, encode_message


def launch_demo(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy wrapper, see genscom.demo.app.launch_demo
    """See :func:`genscom.demo.app.launch_demo` (imported lazily: gradio is optional)."""
    from genscom.demo.app import launch_demo as _launch

    return _launch(*args, **kwargs)


__all__ = ["DemoConfig", "DemoItem", "DemoReceiver", "DemoTransmitter", "TxSettings", "UploadError", "WireMessage",
           "decode_message", "encode_message", "launch_demo", "optional_features", "read_upload"]
