"""Incremental Kube-OVN selection: one verdict per IptablesEIP, re-evaluated only when it can change.

The rules stay in :mod:`bgp_speaker.core.kubeovn` (:func:`~bgp_speaker.core.kubeovn.evaluate` decides
one EIP); this keeps their inputs and outputs between snapshots so that one watch event costs a
few evaluations, not a pass over the whole store:

- **facts** per object (:mod:`bgp_speaker.core.kubeovn_facts`), extracted once per
  ``resourceVersion``: a relist hands back the same versions and reuses them;
- **indexes**, kept up to date on every event: rules by ``spec.eip``, EIP names by ``spec``
  address (for the duplicate rule) and by checked address (who must be re-evaluated when an
  address changes hands);
- **dirty** EIPs, evaluated at the next :meth:`IncrementalSelection.select`: the EIP of an
  event; for a rule, the EIPs its old and new ``spec.eip`` name; for an address change, every
  EIP checking that address. An event that changes no fact (a label written after the spec, a
  new ``status.redo`` on a rule) marks nothing;
- **deadlines** of the hold-downs in a heap: an EIP is re-evaluated when its hold-down ends;
- everything is re-evaluated (indexes rebuilt from the facts) after a relist, a change of the
  gateway object or of the options, and by :meth:`IncrementalSelection.verify`, the periodic
  safety check that counts the verdicts the incremental path got wrong.

Evaluation happens at :meth:`~IncrementalSelection.select` time with the caller's ``now``, as
the full :func:`~bgp_speaker.core.kubeovn.select` does, so both give the same selection for the
same events (``tests/unit/test_kube_incremental.py`` checks that on random event sequences).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bgp_speaker.core import kubeovn
from bgp_speaker.core.kubeovn_facts import (
    EipFacts,
    RuleFacts,
    RuleKind,
    name_of,
    parse_eip,
    parse_rule,
    resource_version_of,
)
from bgp_speaker.core.model import Candidate, Refusal

Obj = Mapping[str, Any]
RuleKey = tuple[RuleKind, str]
_Joined = tuple[tuple[Candidate, ...], tuple[Refusal, ...], tuple[kubeovn.Hold, ...], "_HoldDownView"]


class _HoldDownView(Mapping[tuple[str, str], kubeovn.Held]):
    """The hold-down state of every EIP, read through the per-EIP verdicts (not merged into one
    dict: nobody but the tests reads all of it)."""

    def __init__(self, verdicts: Mapping[str, kubeovn.Verdict], order: list[str]) -> None:
        self._verdicts, self._order = dict(verdicts), list(order)

    def __getitem__(self, key: tuple[str, str]) -> kubeovn.Held:
        name = kubeovn.eip_name_of(key[0])
        verdict = self._verdicts.get(name) if name is not None else None
        if verdict is None:
            raise KeyError(key)
        return verdict.state[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return itertools.chain.from_iterable(self._verdicts[n].state for n in self._order)

    def __len__(self) -> int:
        return sum(len(self._verdicts[n].state) for n in self._order)


def _index_add(index: dict[str, set[str]], keys: Iterable[str], name: str) -> None:
    for key in keys:
        index.setdefault(key, set()).add(name)


def _index_remove(index: dict[str, set[str]], keys: Iterable[str], name: str) -> None:
    for key in keys:
        names = index.get(key)
        if names is not None:
            names.discard(name)
            if not names:
                del index[key]


class IncrementalSelection:
    """Per-EIP verdicts over an in-memory copy of the watched objects. Not thread-safe."""

    def __init__(self, options: kubeovn.Options) -> None:
        self._options = options
        self._objects: dict[str, Obj] = {}
        #: name -> (resourceVersion, facts): a relist reuses the facts of an unchanged object.
        self._eips: dict[str, tuple[str, EipFacts]] = {}
        self._rules: dict[RuleKey, tuple[str, RuleFacts]] = {}
        self._rules_by_eip: dict[str, dict[RuleKey, RuleFacts]] = {}
        self._owners: dict[str, set[str]] = {}
        self._checkers: dict[str, set[str]] = {}
        #: Non-empty verdicts only (EIPs of other gateways have none), and their names in order.
        self._verdicts: dict[str, kubeovn.Verdict] = {}
        self._order: list[str] = []
        self._dirty: set[str] = set()
        self._everything = True
        self._deadlines: list[tuple[float, str]] = []
        self._joined: _Joined | None = None
        #: Counters for ``/status``: EIP evaluations, full recomputations, wrong incremental verdicts.
        self.stats = {"evaluations": 0, "full": 0, "mismatches": 0}

    @property
    def options(self) -> kubeovn.Options:
        return self._options

    # --- events -------------------------------------------------------------------------------

    def reconfigure(self, options: kubeovn.Options) -> None:
        """New options: everything is re-evaluated; facts are re-extracted if the prefix changed."""
        prefix_changed = options.annotation_prefix != self._options.annotation_prefix
        self._options = options
        if prefix_changed:
            self._eips = {name: self._extract(obj, cached=None) for name, obj in self._objects.items()}
        self._everything = True

    def gateway_changed(self) -> None:
        self._everything = True

    def upsert_eip(self, obj: Obj) -> None:
        name = name_of(obj)
        old = self._eips.get(name)
        entry = self._extract(obj, cached=old)
        self._objects[name] = obj
        self._eips[name] = entry
        self._eip_changed(name, None if old is None else old[1], entry[1])

    def delete_eip(self, name: str) -> None:
        self._objects.pop(name, None)
        old = self._eips.pop(name, None)
        if old is not None:
            self._eip_changed(name, old[1], None)

    def replace_eips(self, objects: Iterable[Obj]) -> None:
        """A relist: the new objects replace the old ones; everything is re-evaluated."""
        old, self._objects, self._eips = self._eips, {}, {}
        for obj in objects:
            name = name_of(obj)
            self._objects[name] = obj
            self._eips[name] = self._extract(obj, cached=old.get(name))
        self._everything = True

    def upsert_rule(self, kind: RuleKind, obj: Obj) -> None:
        key = (kind, name_of(obj))
        old = self._rules.get(key)
        version = resource_version_of(obj)
        if old is not None and version and old[0] == version:
            return
        facts = parse_rule(obj, kind=kind)
        self._rules[key] = (version, facts)
        self._rule_changed(key, None if old is None else old[1], facts)

    def delete_rule(self, kind: RuleKind, name: str) -> None:
        old = self._rules.pop((kind, name), None)
        if old is not None:
            self._rule_changed((kind, name), old[1], None)

    def replace_rules(self, kind: RuleKind, objects: Iterable[Obj]) -> None:
        """A relist of one rule kind; everything is re-evaluated."""
        kept = {key: value for key, value in self._rules.items() if key[0] != kind}
        for obj in objects:
            key = (kind, name_of(obj))
            old = self._rules.get(key)
            version = resource_version_of(obj)
            reuse = old is not None and version and old[0] == version
            kept[key] = old if reuse and old is not None else (version, parse_rule(obj, kind=kind))
        self._rules = kept
        self._everything = True

    # --- the selection ------------------------------------------------------------------------

    def select(self, now: float) -> kubeovn.Selection:
        """The selection at ``now``: evaluates what is dirty or whose hold-down ended, then joins."""
        if self._everything:
            self._recompute(now)
        else:
            while self._deadlines and self._deadlines[0][0] <= now:
                name = heapq.heappop(self._deadlines)[1]
                verdict = self._verdicts.get(name)
                deadline = None if verdict is None else verdict.deadline
                if deadline is not None and deadline <= now:  # else a stale entry: the hold ended
                    self._dirty.add(name)
            dirty, self._dirty = self._dirty, set()
            for name in dirty:
                self._evaluate(name, now)
        if self._joined is None:
            verdicts = [self._verdicts[name] for name in self._order]
            self._joined = (
                tuple(itertools.chain.from_iterable(v.candidates for v in verdicts)),
                tuple(itertools.chain.from_iterable(v.refusals for v in verdicts)),
                tuple(itertools.chain.from_iterable(v.holds for v in verdicts)),
                _HoldDownView(self._verdicts, self._order),
            )
        candidates, refusals, holds, hold_down = self._joined
        return kubeovn.Selection(
            candidates=candidates,
            refusals=refusals,
            held=tuple(hold.note(now) for hold in holds),
            hold_down=hold_down,
            next_deadline=min((hold.until for hold in holds), default=None),
        )

    def verify(self, now: float) -> int:
        """Bring the incremental verdicts up to ``now``, recompute everything from the facts, and
        return how many EIPs' verdicts differed (0 unless the incremental bookkeeping is wrong).
        The recomputed verdicts are kept."""
        self.select(now)
        wrong = self._recompute(now)
        self.stats["mismatches"] += wrong
        return wrong

    # --- internals ----------------------------------------------------------------------------

    def _extract(self, obj: Obj, *, cached: tuple[str, EipFacts] | None) -> tuple[str, EipFacts]:
        version = resource_version_of(obj)
        if cached is not None and version and cached[0] == version:
            return cached
        return version, parse_eip(obj, annotation_prefix=self._options.annotation_prefix)

    def _eip_changed(self, name: str, old: EipFacts | None, new: EipFacts | None) -> None:
        if old == new:
            return
        if old is not None:
            _index_remove(self._owners, old.spec_addresses, name)
            _index_remove(self._checkers, old.checked_addresses, name)
        if new is not None:
            _index_add(self._owners, new.spec_addresses, name)
            _index_add(self._checkers, new.checked_addresses, name)
        self._dirty.add(name)
        # Whoever checks an address that changed hands may have gained or lost a duplicate.
        moved = set(old.spec_addresses if old else ()) ^ set(new.spec_addresses if new else ())
        for address in moved:
            self._dirty.update(self._checkers.get(address, ()))

    def _rule_changed(self, key: RuleKey, old: RuleFacts | None, new: RuleFacts | None) -> None:
        if old == new:
            return
        if old is not None and old.eip:
            bound = self._rules_by_eip.get(old.eip, {})
            bound.pop(key, None)
            if not bound:
                self._rules_by_eip.pop(old.eip, None)
            self._dirty.add(old.eip)
        if new is not None and new.eip:
            self._rules_by_eip.setdefault(new.eip, {})[key] = new
            self._dirty.add(new.eip)

    def _evaluate(self, name: str, now: float) -> bool:
        """Re-evaluate one EIP; True when its verdict changed."""
        entry = self._eips.get(name)
        old = self._verdicts.get(name, kubeovn.NOTHING)
        if entry is None:
            new = kubeovn.NOTHING
        else:
            self.stats["evaluations"] += 1
            new = kubeovn.evaluate(
                entry[1],
                options=self._options,
                owners=self._owners,
                rules=self._rules_by_eip.get(name, {}).values(),
                previous=old.state,
                now=now,
            )
        if new.deadline is not None:
            heapq.heappush(self._deadlines, (new.deadline, name))
        if new == old:
            return False
        self._joined = None
        empty = not (new.candidates or new.refusals or new.holds or new.state)
        if empty:
            del self._verdicts[name]
            del self._order[bisect.bisect_left(self._order, name)]
        else:
            if name not in self._verdicts:
                bisect.insort(self._order, name)
            self._verdicts[name] = new
        return True

    def _recompute(self, now: float) -> int:
        """Rebuild every index from the facts and re-evaluate every EIP; how many verdicts changed."""
        self.stats["full"] += 1
        self._owners, self._checkers, self._rules_by_eip = {}, {}, {}
        for name, (_, facts) in self._eips.items():
            _index_add(self._owners, facts.spec_addresses, name)
            _index_add(self._checkers, facts.checked_addresses, name)
        for key, (_, rule) in self._rules.items():
            if rule.eip:
                self._rules_by_eip.setdefault(rule.eip, {})[key] = rule
        self._deadlines, self._dirty, self._everything = [], set(), False
        return sum(self._evaluate(name, now) for name in sorted(set(self._eips) | set(self._verdicts)))
