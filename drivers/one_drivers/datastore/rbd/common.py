"""What every DS action of the ``rbd`` driver shares: settings, names, the answer line."""

from __future__ import annotations

from one_drivers.ceph.naming import ImageSpec, image_name
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.retry import action_timeout


def ds_settings(call: Call) -> Settings:
    """Defaults < driver config file < datastore template; a timeout the template sets
    (``<ACTION>_TIMEOUT`` or ``ACTION_TIMEOUT``) becomes the action's deadline."""
    settings = call.settings.over(call.doc.datastore.template)
    timeout = action_timeout(call.action, settings, call.deadline.seconds)
    if timeout != call.deadline.seconds:
        call.deadline.retime(timeout)
    return settings


def target(call: Call, settings: Settings) -> ImageSpec:
    """Where this image lives: ``<POOL_NAME>/one-<IMAGE_ID>``."""
    return ImageSpec(settings.get("POOL_NAME", "one") or "one", image_name(call.doc.image.id))


def source_spec(call: Call, settings: Settings) -> ImageSpec:
    """The existing image's SOURCE (``pool/one-<ID>``), or the name it would have. A SOURCE
    of ``pool/one-<ID> raw`` is what oned stored from mkfs answers of earlier versions (oned keeps
    mkfs' whole answer): its image is still found, so it can be removed."""
    source = call.doc.image.source
    if source:
        words = source.split()
        if len(words) == 2 and words[1] in ("raw", "qcow2"):
            source = words[0]
        return ImageSpec.parse(source, settings.get("POOL_NAME"))
    return target(call, settings)


def answer(spec: ImageSpec) -> str:
    """``<SOURCE> <FORMAT>``: what cp and clone print (oned splits their answer in two)."""
    return f"{spec.pool}/{spec.name} raw"


def source_answer(spec: ImageSpec) -> str:
    """``<SOURCE>`` alone: mkfs' answer (oned's ImageManager::_mkfs stores all of it as
    SOURCE)."""
    return f"{spec.pool}/{spec.name}"
