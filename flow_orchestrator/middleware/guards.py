"""Middleware that refuse a call: :func:`permission` (a predicate on the context, before
the call) and :func:`validate` (checks of the inputs before the call and of the output
after it).

Layer L4 (services, observation), a family of :mod:`flow_orchestrator.middleware`; it
imports :mod:`~flow_orchestrator.middleware.base` and :mod:`flow_orchestrator.errors`
only.  The errors they raise, :class:`PermissionDeniedError` and
:class:`ValidationError`, live in ``base`` with the other middleware errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import DefinitionError
from .base import Action, Middleware, PermissionDeniedError, ValidationError, _check_callable

__all__ = ["permission", "validate"]


# -- permission -------------------------------------------------------------------------------------------


class _Permission(Middleware):
    def __init__(self, predicate: Callable[[Any], bool], message: str | None) -> None:
        self.predicate = predicate
        self.message = message

    def wrap(self, action: Action) -> Action:
        predicate, message = self.predicate, self.message

        def checked(ctx: Any) -> Any:
            if not predicate(ctx):
                node = ctx.node
                raise PermissionDeniedError(f"node {node!r}: {message or 'permission denied'}", node)
            return action(ctx)
        return checked


def permission(predicate: Callable[[Any], bool], message: str | None = None) -> Middleware:
    """Run the action only if ``predicate(ctx)`` is true; otherwise raise
    :class:`PermissionDeniedError` naming the node (and ``message``, if given).

    The predicate sees the whole context: ``ctx.node``, ``ctx.data``, ``ctx.inputs``...

    Example::

        admins_only = permission(lambda ctx: ctx.data["user"] in ADMINS, "admins only")
        builder.add("drop_table", drop_table, middleware=admins_only)
    """
    _check_callable("predicate", predicate)
    if message is not None and not isinstance(message, str):
        raise DefinitionError(f"message must be a str or None, got {message!r}")
    return _Permission(predicate, message)


# -- validation --------------------------------------------------------------------------------------------

# A check returns None when the value is valid, else a description of what is wrong.
Check = Callable[[Any], "str | None"]


def _is_type_spec(spec: object) -> bool:
    return isinstance(spec, type) or (isinstance(spec, tuple) and bool(spec)
                                      and all(isinstance(t, type) for t in spec))


def _type_names(spec: type | tuple[type, ...]) -> str:
    types_ = spec if isinstance(spec, tuple) else (spec,)
    return " or ".join(t.__name__ for t in types_)


def _instance_check(spec: type | tuple[type, ...], label: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, spec):
            return None
        return f"{label} is {type(value).__name__}, expected {_type_names(spec)}"
    return check


def _mapping_check(schema: Mapping[str, Any], label: str) -> Check:
    items = tuple(schema.items())

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"{label} is {type(value).__name__}, expected a mapping with keys {sorted(schema)}"
        for key, spec in items:
            if key not in value:
                return f"{label} {key!r} is missing"
            if not isinstance(value[key], spec):
                return f"{label} {key!r} is {type(value[key]).__name__}, expected {_type_names(spec)}"
        return None
    return check


def _callable_check(fn: Callable[[Any], Any], label: str) -> Check:
    name = getattr(fn, "__qualname__", None) or repr(fn)

    def check(value: Any) -> str | None:
        verdict = fn(value)
        # None passes: validators that only raise return nothing.
        return None if verdict is None or verdict else f"{label} rejected by {name}"
    return check


def _each_check(spec: type | tuple[type, ...], label: str) -> Check:
    def check(mapping: Mapping[str, Any]) -> str | None:
        for key, value in mapping.items():
            if not isinstance(value, spec):
                return f"{label} {key!r} is {type(value).__name__}, expected {_type_names(spec)}"
        return None
    return check


def _compile_spec(spec: Any, label: str, *, each: bool) -> Check:
    """A check for ``spec``; with ``each``, a type spec applies to every value of a mapping."""
    if _is_type_spec(spec):
        return _each_check(spec, label) if each else _instance_check(spec, label)
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if not isinstance(key, str) or not _is_type_spec(value):
                raise DefinitionError(
                    f"a {label} schema maps str keys to a type or a tuple of types, got {key!r}: {value!r}")
        return _mapping_check(spec, label)
    if callable(spec):
        return _callable_check(spec, label)
    raise DefinitionError(f"{label} must be a callable, a type, a tuple of types or a dict schema, got {spec!r}")


class _Validate(Middleware):
    def __init__(self, inputs: Any, output: Any) -> None:
        self.inputs = inputs
        self.output = output

    def checks(self) -> tuple[Check | None, Check | None]:
        """The input and output checks (``None`` for no check); raises ``DefinitionError``
        for a malformed spec."""
        return (None if self.inputs is None else _compile_spec(self.inputs, "input", each=True),
                None if self.output is None else _compile_spec(self.output, "output", each=False))

    def wrap(self, action: Action) -> Action:
        check_inputs, check_output = self.checks()

        def validated(ctx: Any) -> Any:
            if check_inputs is not None:
                _enforce(check_inputs, ctx.inputs, ctx, "input")
            result = action(ctx)
            if check_output is not None:
                _enforce(check_output, result, ctx, "output")
            return result
        return validated


def _enforce(check: Check, value: Any, ctx: Any, what: str) -> None:
    try:
        problem = check(value)
    except Exception as exc:
        node = ctx.node
        raise ValidationError(f"node {node!r}: {what} validation raised {type(exc).__name__}: {exc}",
                              node, what) from exc
    if problem is not None:
        node = ctx.node
        raise ValidationError(f"node {node!r}: {problem}", node, what)


def validate(inputs: Any = None, output: Any = None) -> Middleware:
    """Check a node's inputs before the call and its output after it; raise
    :class:`ValidationError` naming the node and what failed.

    Each of ``inputs`` and ``output`` is one of:

    * a callable, given ``ctx.inputs`` (the dict of dependency outputs) or the output,
      that returns a false value (other than ``None``) or raises to reject it;
    * a type or a tuple of types: every input value, or the output, must be an instance;
    * a dict ``{key: type or tuple of types}``: ``ctx.inputs``, or the output (which must
      be a mapping), must have those keys with values of those types (other keys pass).

    Example::

        builder.add("report", report, depends_on=["totals"],
                    middleware=validate(inputs={"totals": dict}, output=str))
    """
    if inputs is None and output is None:
        raise DefinitionError("validate() needs inputs=..., output=... or both")
    middleware = _Validate(inputs, output)
    middleware.checks()  # malformed specs are reported now, not when a workflow is compiled
    return middleware
