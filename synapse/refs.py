"""Every ``$ref`` resolves to a loaded schema file, checked at load; nothing is fetched.

The schema files under ``schemas/`` are the whole world a reference may point
into: a ``$ref`` (or ``$dynamicRef``) to a file that is not there, or to
``http://...``, is a config problem with file and line, found when the table
loads, never a traceback at start-up nor an exception while an event's error
message is being built. The JSON Schema metaschemas, which both validators
bundle, are the one exception. Local JSON pointers (``#/$defs/x``) must point at
something; plain-name anchors (``#name``) are left to the validators.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

#: Bundled by jsonschema and jsonschema-rs: resolvable without a fetch.
BUNDLED_PREFIXES = ("https://json-schema.org/", "http://json-schema.org/")

Pointer = tuple[str | int, ...]

#: Keywords whose values are data, not schemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})


def dangling(
    documents: Mapping[str, tuple[str, dict[str, Any]]],
) -> Iterator[tuple[str, Pointer, str]]:
    """(file, pointer to the ``$ref`` value, message) for each reference that cannot resolve.

    ``documents`` maps each file's relative name to (its base URI, its schema).
    """
    resources: dict[str, Any] = {}
    for uri, schema in documents.values():
        for base, node in _resources(schema, uri):
            resources.setdefault(urldefrag(base).url, node)
    for rel, (uri, schema) in documents.items():
        for pointer, base, ref in _refs(schema, uri, ()):
            target = urljoin(base, ref)
            resource, fragment = urldefrag(target)
            if resource.startswith(BUNDLED_PREFIXES):
                continue
            if resource not in resources:
                yield (
                    rel,
                    pointer,
                    f"$ref {ref!r} resolves to {resource}, which is not one of the schema files "
                    "(references are never fetched: put the schema in the schemas/ folder)",
                )
            elif fragment.startswith("/") and not _resolves(resources[resource], fragment):
                yield rel, pointer, f"$ref {ref!r}: nothing at #{fragment} in {resource}"


def _resources(node: Any, base: str, root: bool = True) -> Iterator[tuple[str, Any]]:
    """(URI, subschema) for the document itself and each embedded ``$id``."""
    if isinstance(node, dict):
        declared = node.get("$id")
        if isinstance(declared, str):
            base = urljoin(base, declared)
            yield base, node
        elif root:
            yield base, node
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                yield from _resources(value, base, False)
    elif isinstance(node, list):
        for item in node:
            yield from _resources(item, base, False)


def _refs(node: Any, base: str, at: Pointer) -> Iterator[tuple[Pointer, str, str]]:
    """(pointer, base URI in force, reference) for every ``$ref`` and ``$dynamicRef``."""
    if isinstance(node, dict):
        declared = node.get("$id")
        if isinstance(declared, str):
            base = urljoin(base, declared)
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield (*at, key), base, value
            elif key not in _DATA_KEYWORDS:
                yield from _refs(value, base, (*at, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _refs(item, base, (*at, index))


def _resolves(document: Any, fragment: str) -> bool:
    """Whether the JSON pointer ``fragment`` (``/a/0/b``) names a value in ``document``."""
    node = document
    for raw in fragment.split("/")[1:]:
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True
