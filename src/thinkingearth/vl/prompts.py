"""Prompt templates and prompt ensembles for zero-shot heads.

A class name alone ("forest") is a poor query for a text encoder trained on sentences; CLIP
(Radford et al. 2021, section 3.1.4) writes it into several templates ("a satellite image of
forest.") and averages them: each template's embedding is L2-normalised, the mean over templates
is taken per class and normalised again. :func:`class_embeddings` does exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from thinkingearth.errors import UserInputError

__all__ = ["DEFAULT_TEMPLATES", "class_embeddings", "format_prompts"]

#: Earth-observation prompt templates; ``{}`` is the class name.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.",
    "a Sentinel image showing {}.",
    "an aerial view of {}.",
    "a remote sensing image of {}.",
    "a landscape of {}.",
    "a scene dominated by {}.",
)


def format_prompts(classname: str, templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """The prompts of one class: each template with ``{}`` replaced by ``classname``.

    Raises:
        UserInputError: No templates, or a template without exactly one ``{}``.
    """
    if isinstance(templates, str):
        templates = (templates,)
    if not templates:
        raise UserInputError(
            "no prompt templates given; expected at least one, e.g. 'a photo of {}.'"
        )
    prompts = []
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise UserInputError(
                f"prompt template {template!r} must hold exactly one '{{}}' for the class name"
            )
        prompts.append(template.replace("{}", classname))
    return prompts


def class_embeddings(
    text: Any, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> Tensor:
    """Per-class prompt-ensemble embeddings ``[K, dim]`` (CLIP's zero-shot head).

    Args:
        text: A :class:`~thinkingearth.vl.text.TextEncoder` (``encode``), or a
            :class:`~thinkingearth.vl.model.VLModel` (``encode_text``).
        classnames: The class names, in the order of the classifier's outputs.
        templates: Templates with one ``{}`` each.

    Returns:
        Row ``k``: the mean over templates of the L2-normalised embeddings of class ``k``'s
        prompts, L2-normalised again.

    Raises:
        UserInputError: No class names, an empty or repeated name, or bad templates.
    """
    if isinstance(classnames, str):
        raise UserInputError("classnames must be a list of class names, got one string")
    names = [str(c).strip() for c in classnames]
    if not names:
        raise UserInputError("no class names given; expected at least one")
    for name in names:
        if not name:
            raise UserInputError("a class name is empty; expected non-empty names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserInputError(f"class name {repeated[0]!r} is given twice; expected distinct names")
    encode = getattr(text, "encode_text", None) or text.encode
    prompts = [format_prompts(name, templates) for name in names]
    flat = [p for group in prompts for p in group]
    vectors = F.normalize(encode(flat).float(), dim=-1)
    per_class = vectors.reshape(len(names), len(prompts[0]), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)
