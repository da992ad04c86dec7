"""Which engine builds which entry, and when: the scheduler behind `invoke build`.

Rules, in order, each time an engine has a free job slot (engines are visited least loaded first,
ties in the order they were declared):
  1. Affinity. Entries that share a builder stage (same distro, target and build-deps command) or a
     cross build's build-python stage (same release, distro and target) form a group, and a group
     goes to the engine that started its first entry, so that engine's layer cache is reused: once
     an entry of the group has ended there, the engine takes the group's next entry first.
  2. Else the engine starts the next unstarted group it can build; only when there is none does it
     start a second entry of its own group whose first is still building (and so still making the
     shared stages: both would make them at once, as `--jobs 2` on two siblings used to).
  3. Only when a slot would otherwise stay idle does it take the next entry of a group whose engines
     are all busy (that group's builder stage is then built once more, on this engine).
An engine runs at most its job limit at once; each entry's images are built, smoke-tested and
tagged on the engine that builds it.

Faults. An entry that ends badly on an engine that no longer answers a ping, or an engine that stops
answering the scheduler's pings while it builds, takes that engine out of the run: the entries
running there end (marked with the cause; nothing of them is tagged, since tags come only after a
smoke test on that engine), its queued entries go to the other engines of their platform, and with
`--retry` the entries it was building are queued again for another engine of the same platform
(their earlier attempt is kept in the report's `attempts`, its log as `<entry>.attempt<N>.log`).
The other engines finish their entries. Entries no engine is left for end with the cause.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from . import render
from .build import Builder, blank_result, interrupts_raise_keyboardinterrupt
from .builders import Worker
from .errors import Interrupted
from .matrix import BuildSpec
from .report import EntryResult

PROBE_EVERY = 20.0  # seconds between pings of the engines that are building, when nothing finishes
PROBE_TIMEOUT = 10.0
PROBE_MISSES = 2  # pings in a row an engine may miss before it is taken out of the run
PROBE_GRACE = 5.0  # seconds beyond PROBE_TIMEOUT a ping may take before it counts as missed


def affinity_groups(specs: Sequence[BuildSpec]) -> list[int]:
    """Each spec's group: specs linked by a shared builder stage or build-python stage (transitively)."""
    parent = list(range(len(specs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, ...], int] = {}
    for i, spec in enumerate(specs):
        keys = [("builder", spec.distro.name, *render.deps_command(spec))]
        if spec.cross:
            keys.append(("build-python", spec.version, spec.distro.name, spec.platform.arch))
        for key in keys:
            j = owner.setdefault(key, i)
            parent[find(i)] = find(j)
    return [find(i) for i in range(len(specs))]


@dataclass(eq=False)
class _Task:
    spec: BuildSpec
    index: int  # in the plan
    group: int
    queued_at: float
    earlier: list[dict[str, Any]] = field(default_factory=list)  # attempts on engines that were lost
    lost_on: set[str] = field(default_factory=set)


@dataclass
class ScheduleStats:
    """What the scheduler measured of one run (for `invoke bench build --builder …`)."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0  # the scheduler's own CPU time (its thread: dispatching, bookkeeping)
    dispatch: dict[str, float] = field(default_factory=dict)  # entry → from "could start" to "engine building"
    engine_of: dict[str, str] = field(default_factory=dict)  # entry → the engine that built it last
    lost: dict[str, str] = field(default_factory=dict)  # engine → why it left the run


class Scheduler:
    def __init__(self, builder: Builder, *, probe_every: float | None = None) -> None:
        self.b = builder
        self.fleet = builder.fleet
        self.probe_every = PROBE_EVERY if probe_every is None else probe_every
        self.stats = ScheduleStats()
        self._queue: list[_Task] = []
        self._results: dict[int, EntryResult] = {}
        self._bound: dict[int, list[Worker]] = {}  # group → the engines building it
        self._warm: set[tuple[int, str]] = set()  # (group, engine url): an entry of it ended there
        self._running: dict[Future[tuple[EntryResult, bool]], tuple[_Task, Worker]] = {}
        self._failed = False
        self._cpu = 0.0

    # ------------------------------------------------------------------------------ the loop

    def run(self, specs: Sequence[BuildSpec]) -> list[EntryResult]:
        t0 = time.monotonic()
        groups = affinity_groups(specs)
        tasks = [_Task(spec, i, groups[i], t0) for i, spec in enumerate(specs)]
        self._queue = list(tasks)
        for w in self.fleet.workers:
            w.freed_at = t0
        slots = sum(w.jobs for w in self.fleet.live())
        pool = ThreadPoolExecutor(max_workers=max(1, slots), thread_name_prefix="cpforge-build")
        try:
            with interrupts_raise_keyboardinterrupt():
                self._loop(pool)
        except KeyboardInterrupt:
            self._interrupt(pool, len(tasks))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.stats.wall_seconds = time.monotonic() - t0
            self.stats.cpu_seconds = self._cpu
        return [self._results[t.index] for t in tasks]

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        while self._queue or self._running:
            cpu = time.thread_time()
            self._strand_unbuildable()
            self._dispatch(pool)
            self._cpu += time.thread_time() - cpu
            if not self._running:
                continue  # the queue emptied: every remaining entry was skipped or stranded
            done, _ = wait(list(self._running), timeout=self.probe_every, return_when=FIRST_COMPLETED)
            cpu = time.thread_time()
            for fut in done:
                self._finished(fut)
            if not done:
                self._probe()
            self._cpu += time.thread_time() - cpu

    def _dispatch(self, pool: ThreadPoolExecutor) -> None:
        """Start what can start: each free slot, least loaded engine first."""
        if self._failed and not self.b.options.keep_going:
            for queued in self._queue:
                self._skip(queued)
            self._queue.clear()
            return
        while self._queue:
            free = [w for w in self.fleet.workers if w.live and w.running < w.jobs]
            started = False
            for w in sorted(free, key=lambda w: w.running / w.jobs):  # stable: declaration order on ties
                task = self._pick(w)
                if task is not None:
                    self._start(pool, task, w)
                    started = True
                    break
            if not started:
                return

    def _pick(self, w: Worker) -> _Task | None:
        mine = [t for t in self._queue if w.serves(t.spec.platform.name) and w.url not in t.lost_on]
        own = [t for t in mine if w in self._bound.get(t.group, ())]
        # 1. own groups whose shared stages this engine has built: their next entry starts from its cache
        chosen: _Task | None = next((t for t in own if (t.group, w.url) in self._warm), None)
        if chosen is None:
            chosen = next((t for t in mine if not self._bound.get(t.group)), None)  # 2. a new group
        if chosen is None:  # 2b. own groups whose first entry is still building its shared stages
            chosen = next(iter(own), None)
        if chosen is None:  # 3. help a group whose engines are all busy
            busy = [t for t in mine if all(not o.live or o.running >= o.jobs for o in self._bound[t.group])]
            if busy:
                sizes = {t.group: sum(1 for u in busy if u.group == t.group) for t in busy}
                chosen = max(busy, key=lambda t: (sizes[t.group], -t.index))
        if chosen is not None:
            self._queue.remove(chosen)
            bound = self._bound.setdefault(chosen.group, [])
            if w not in bound:
                bound.append(w)
        return chosen

    def _start(self, pool: ThreadPoolExecutor, task: _Task, w: Worker) -> None:
        w.running += 1
        ready = max(task.queued_at, w.freed_at)  # it could have started once queued and a slot was free
        fut = pool.submit(self._attempt, task, w, ready)
        self._running[fut] = (task, w)

    def _attempt(self, task: _Task, w: Worker, ready: float) -> tuple[EntryResult, bool]:
        """One attempt, in a pool thread; also whether the engine has gone (it failed and is silent)."""
        try:
            place = self.b.place(task.spec, w, ready_at=ready, earlier=tuple(task.earlier))
        except Exception as exc:  # noqa: BLE001 - the engine cannot even say its architecture
            res = blank_result(task.spec, self.b.ws)
            res.status, res.problems, res.engine = "error", [str(exc)], w.url
            return res, True
        res = self.b.build_one(task.spec, place)
        gone = not res.passed and not place.engine.cancelled and not place.engine.alive(PROBE_TIMEOUT)
        return res, gone

    def _finished(self, fut: Future[tuple[EntryResult, bool]]) -> None:
        task, w = self._running.pop(fut)
        w.running -= 1
        self._warm.add((task.group, w.url))
        w.freed_at = time.monotonic()
        res, gone = fut.result()
        if gone and not w.lost:
            self._lose(w, "it stopped answering: " + (res.reason or res.status).replace(f" {w.url}", ""))
        if w.lost and not res.passed:
            self._lost_attempt(task, w, res)
            return
        self._done(task, res)
        if not res.passed:
            self._failed = True

    def _done(self, task: _Task, res: EntryResult) -> None:
        self._results[task.index] = res
        self.stats.engine_of[task.spec.key] = res.engine
        if "dispatch" in res.durations:
            self.stats.dispatch[task.spec.key] = res.durations["dispatch"]

    # ------------------------------------------------------------------------------ faults

    def _lose(self, w: Worker, cause: str) -> None:
        """Take ``w`` out of the run: stop its work, and let the others take over its queue."""
        w.lost = cause
        self.stats.lost[w.url] = cause
        self.b.progress.say(
            f"✕ engine {w.url} is lost: {cause}. Its running entries are stopped (nothing of them is tagged); "
            "the other engines take its queue"
        )
        for members in self._bound.values():
            if w in members:
                members.remove(w)
        assert w.engine is not None
        w.engine.cancel()  # ends the builds still streaming from it (a hung host, not a dead daemon)

    def _lost_attempt(self, task: _Task, w: Worker, res: EntryResult) -> None:
        """``task`` was under way on ``w`` when it was lost: keep the attempt, then retry or give up."""
        spec = task.spec
        cause = f"engine {w.url} was lost during the build: {w.lost}"
        log = self.b.ws.log_path(spec)
        kept = log.with_name(f"{spec.id}.{spec.profile.name}.attempt{len(task.earlier) + 1}.log")
        if log.exists():
            log.replace(kept)
        task.earlier.append(
            {
                "engine": w.url,
                "status": "lost",
                "problem": cause,
                "detail": res.problems[:3],
                "seconds": round(res.durations.get("total", 0.0), 1),
                "log": str(kept),
            }
        )
        task.lost_on.add(w.url)
        others = [o for o in self.fleet.serving(spec.platform.name) if o.url not in task.lost_on]
        if self.b.options.retry and others:
            self.b.progress.say(f"↻ {spec.key}: {cause}; building it again on another engine (--retry)")
            task.queued_at = time.monotonic()
            self._queue.insert(sum(1 for t in self._queue if t.index < task.index), task)
            return
        why = "rerun with --retry to build such entries again on another engine" if others else ""
        res.status, res.engine, res.attempts, res.log = "error", w.url, list(task.earlier), str(kept)
        res.problems = [cause + (f" ({why})" if why else ""), *res.problems]
        res.reason = cause
        self.b.record(res)
        self.b.progress.done(spec.key, False, f"{cause}; nothing of it was tagged; log: {kept}")
        self._done(task, res)

    def _probe(self) -> None:
        """Nothing finished for a while: ping the engines that are building; one that misses
        PROBE_MISSES pings in a row is lost."""
        busy = [w for w in self.fleet.workers if w.live and w.running > 0]
        answers: dict[str, bool] = {}

        def ping(w: Worker) -> None:
            answers[w.url] = w.engine is not None and w.engine.alive(PROBE_TIMEOUT)

        # Daemon threads, waited for a bounded time: a ping stuck on a dead host (an ssh session that
        # never opens) counts as unanswered and never holds up the run or the process's exit.
        threads = [threading.Thread(target=ping, args=(w,), daemon=True) for w in busy]
        for t in threads:
            t.start()
        deadline = time.monotonic() + PROBE_TIMEOUT + PROBE_GRACE
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for w in busy:
            w.misses = 0 if answers.get(w.url) else w.misses + 1
            if w.misses >= PROBE_MISSES:
                self._lose(w, f"it answered none of {PROBE_MISSES} pings ({PROBE_TIMEOUT:.0f}s each)")

    def _strand_unbuildable(self) -> None:
        """Entries whose platform no engine is left for end now, with the cause."""
        for task in list(self._queue):
            plat = task.spec.platform.name
            if any(w.url not in task.lost_on for w in self.fleet.serving(plat)):
                continue
            self._queue.remove(task)
            res = blank_result(task.spec, self.b.ws)
            res.status, res.attempts = "error", list(task.earlier)
            res.problems = [f"not built: no engine for {plat} is left ({self.fleet.gone_for(plat)})"]
            res.reason = res.problems[0]
            self.b.record(res)
            self.b.progress.done(task.spec.key, False, res.reason)
            self._done(task, res)

    def _skip(self, task: _Task) -> None:
        res = blank_result(task.spec, self.b.ws)
        res.status = "skipped"
        res.problems = ["not built: an earlier entry failed (use --keep-going to build the rest)"]
        res.reason = res.problems[0]
        self.b.progress.done(task.spec.key, False, "skipped (an earlier entry failed)")
        self.b.record(res)
        self._done(task, res)

    # ------------------------------------------------------------------------------ interrupts

    def _interrupt(self, pool: ThreadPoolExecutor, total: int) -> None:
        """First SIGINT/SIGTERM: start nothing, end the engines' work, wait (seconds) for the threads.
        The engines are cancelled before anything is printed: a closed stdout must not keep a build going."""
        self.fleet.cancel()
        never = len(self._queue)
        self._queue.clear()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._still_stopping) if main else None
        try:
            with contextlib.suppress(OSError):
                self.b.progress.say("! interrupted: stopping the builds and containers under way (this takes seconds)")
            for fut, (task, _w) in list(self._running.items()):
                res, _gone = fut.result()
                self._done(task, res)
            self._running.clear()
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        stopped = [r.key for r in self._results.values() if r.status == "interrupted"]
        finished = len(self._results) - len(stopped)
        raise Interrupted(
            f"interrupted: stopped {', '.join(stopped) or 'nothing'}; {finished} of {total} entries had "
            f"finished, {never} never started; nothing unproven was tagged",
            hint="rerun the same command: the steps that finished come from the layer cache",
        )

    def _still_stopping(self, signum: int, frame: object) -> None:
        self.b.progress.say("! still stopping the work under way; please wait")
