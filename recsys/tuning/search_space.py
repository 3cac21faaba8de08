"""Search spaces as config: each entry a distribution over one override, optionally conditional.

```yaml
search_space:
  model.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  model.dim: {type: categorical, choices: [32, 64, 128]}
  model/user_encoder: [sasrec, lstm]                 # a list: categorical shorthand
  model.user_encoder.num_layers: {type: int, low: 1, high: 3, when: {model/user_encoder: sasrec}}
```

A key with ``/`` is a config-group choice (``model/user_encoder=lstm``); others are values. ``when``
makes a parameter exist only when earlier parameters (or the sweep's fixed overrides) have one of
the given values, so the sampler never proposes a knob the trial does not use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def is_group(self) -> bool:
        return "/" in self.name

    def applies(self, known: Mapping[str, Any]) -> bool:
        """True when every condition holds for the values known so far (sampled or fixed)."""
        return all(str(known.get(key)) in {str(v) for v in values} for key, values in self.when.items())

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.name, list(self.choices))


def parse_search_space(space: Mapping[str, Any]) -> list[Param]:
    """The entries in order (conditions may only name earlier entries or fixed overrides); a clear
    error for an entry that is not a distribution."""
    params: list[Param] = []
    for name, spec in space.items():
        where = f"search_space.{name}"
        if isinstance(spec, list | tuple):
            spec = {"type": "categorical", "choices": list(spec)}
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a mapping with 'type' or a list of choices, got {spec!r}")
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in KINDS:
            raise ValueError(f"{where}: type must be one of {KINDS}, got {kind!r}")
        when = {
            str(k): tuple(v) if isinstance(v, list | tuple) else (v,)
            for k, v in dict(spec.pop("when", {}) or {}).items()
        }
        earlier = {p.name for p in params}
        if kind == "categorical":
            choices = tuple(spec.pop("choices", ()) or ())
            if not choices:
                raise ValueError(f"{where}: a categorical entry needs a non-empty 'choices' list")
            param = Param(name, kind, choices=choices, when=when)
        else:
            if "low" not in spec or "high" not in spec:
                raise ValueError(f"{where}: a {kind} entry needs 'low' and 'high'")
            low, high = float(spec.pop("low")), float(spec.pop("high"))
            if not low < high:
                raise ValueError(f"{where}: low ({low}) must be below high ({high})")
            log, step = bool(spec.pop("log", False)), spec.pop("step", None)
            if log and low <= 0:
                raise ValueError(f"{where}: a log scale needs low > 0, got {low}")
            param = Param(name, kind, low, high, log, None if step is None else float(step), when=when)
        if spec:
            raise ValueError(f"{where}: unknown keys {sorted(spec)}")
        later = [k for k in when if k in space and k not in earlier]
        if later:
            raise ValueError(f"{where}: a condition may only name an earlier entry, not {later}")
        params.append(param)
    return params


def suggest_all(trial: Any, params: list[Param], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """One value per applicable parameter, in order; conditions see fixed overrides and earlier
    values."""
    known: dict[str, Any] = dict(fixed)
    chosen: dict[str, Any] = {}
    for param in params:
        if param.applies(known):
            chosen[param.name] = known[param.name] = param.suggest(trial)
    return chosen


def as_override(name: str, value: Any) -> str:
    """``key=value`` in Hydra's override grammar (floats in full precision)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"{name}={text}"
