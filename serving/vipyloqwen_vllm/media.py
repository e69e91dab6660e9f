"""Image URLs fetched by vLLM's own media connector, so that every vLLM media setting applies as vLLM documents it.

The request reader (:mod:`.requests`) prepares each image with the checkpoint's own image code (as ``encode``
does) and hands vLLM a PNG ``data:`` URL. The bytes of an ``image_url`` are fetched first through the
connector vLLM's chat path builds (``MEDIA_CONNECTOR_REGISTRY.load(VLLM_MEDIA_CONNECTOR, ...)`` with the
server's model config), so these apply exactly as for any vLLM multimodal model:

- ``--allowed-media-domains``: http(s) URLs only from these host names;
- ``--allowed-local-media-path``: ``file://`` URLs (and absolute paths, turned into ``file://`` URLs by the
  reader) only under this folder, none without it;
- ``VLLM_IMAGE_FETCH_TIMEOUT`` (seconds), ``VLLM_MEDIA_FETCH_MAX_RETRIES``, ``VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB``,
  ``VLLM_MEDIA_URL_ALLOW_REDIRECTS``, ``VLLM_MEDIA_CACHE`` (the connector's download settings);
- ``VLLM_MAX_IMAGE_PIXELS`` and vLLM's image format allow-list (checked on the file header, as vLLM's
  ``ImageMediaIO`` does, before the checkpoint's code decodes the pixels);
- ``VLLM_MEDIA_CONNECTOR``: an operator's own connector.

Example (inside a vLLM server process; the middleware does this)::

    fetch = connector_fetch(vllm_config.model_config)
    data = fetch("https://example.com/page.png", "item 1 of 1, image 1")  # bytes, or RequestError
"""

from __future__ import annotations

import io
from collections.abc import Callable
from http import HTTPStatus

import vllm.envs as envs
from PIL import UnidentifiedImageError
from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
from vllm.multimodal.image import ALLOWED_IMAGE_FORMATS, open_image
from vllm.multimodal.media.connector import MEDIA_CONNECTOR_REGISTRY
from vllm.multimodal.media.image import ImageMediaIO

from .requests import RequestError


class EncodedImageIO(ImageMediaIO):
    """vLLM's image IO that keeps the encoded bytes: vLLM's format allow-list and ``VLLM_MAX_IMAGE_PIXELS`` are
    checked on the header, the pixels are decoded later by the checkpoint's image code (EXIF, RGB on white,
    draft decoding of huge JPEGs), as ``encode`` decodes them."""

    def load_bytes(self, data: bytes) -> bytes:  # type: ignore[override]
        try:
            with open_image(io.BytesIO(data)) as image:
                width, height = image.size
        except UnidentifiedImageError:
            raise ValueError(
                f"Failed to load image: {len(data):,} bytes in no image format vLLM serves "
                f"({', '.join(ALLOWED_IMAGE_FORMATS)})"
            ) from None
        except (OSError, ValueError) as error:
            raise ValueError(f"Failed to load image: {error}") from None
        max_pixels = envs.VLLM_MAX_IMAGE_PIXELS
        if max_pixels > 0 and width * height > max_pixels:
            # vLLM's ImageMediaIO message, word for word.
            raise ValueError(
                f"Image dimensions {width}x{height} ({width * height} pixels) exceed the maximum of {max_pixels} "
                "pixels. Set VLLM_MAX_IMAGE_PIXELS to increase this limit."
            )
        return data


def connector_fetch(model_config) -> Callable[[str, str], bytes]:
    """``fetch(url, where) -> bytes`` through vLLM's media connector with ``model_config``'s media settings;
    a refused or failed fetch is a RequestError naming ``where``, with the HTTP status vLLM gives the error."""
    multimodal = model_config.multimodal_config
    media_io_kwargs = multimodal.media_io_kwargs if multimodal else None
    connector = MEDIA_CONNECTOR_REGISTRY.load(
        envs.VLLM_MEDIA_CONNECTOR,
        media_io_kwargs=media_io_kwargs,
        allowed_local_media_path=model_config.allowed_local_media_path,
        allowed_media_domains=model_config.allowed_media_domains,
    )
    image_kwargs = (media_io_kwargs or {}).get("image", {})

    def fetch(url: str, where: str) -> bytes:
        try:
            return connector.load_from_url(
                url, EncodedImageIO(**image_kwargs), fetch_timeout=envs.VLLM_IMAGE_FETCH_TIMEOUT
            )
        except RuntimeError as error:
            # "Cannot load local files without `--allowed-local-media-path`": a refused request, not a server fault.
            raise RequestError(f"{where}: {error}", status=HTTPStatus.BAD_REQUEST) from None
        except Exception as error:  # noqa: BLE001 - every failure is answered, with vLLM's status for it
            info = create_error_response(error).error
            raise RequestError(
                f"{where}: {info.message or type(error).__name__}",
                param=info.param,
                status=HTTPStatus(info.code),
                kind=info.type,
            ) from None

    return fetch


__all__ = ["EncodedImageIO", "connector_fetch"]
