"""Soak test of the closed loop: goals back to back for minutes; does the vla_node process grow?

    python -m vla_ros.bench soak [--minutes 10] [--quick] [--checkpoint DIR] [--seed S]

Starts launch/sim_demo.launch.py (sim robot + vla_node with the default checkpoint, separate
processes, DDS between them) and runs seeded episodes one after the other, as `vla_ros eval-ros`
does: re-arm vla_node around a sim reset, send the scene's instruction, wait for the goal's end.
--minutes is the time spent running goals, start-up not included; --quick runs about half a minute
of goals (about a minute in all) with a warm-up of 2 goals.

Measured for the vla_node process (found in the launch's process group by its command line, read
from /proc): resident memory (VmRSS), threads, open file descriptors; and for the ROS graph, seen
by an observer node of this process: nodes, topics, publishers and subscriptions summed over all
topics, and services (the whole ROS_DOMAIN_ID, this process' own two nodes included). Samples are
taken between goals: at start (stack ready, no goal yet), after the warm-up (the first goals and the
first minute: allocator pools, caches and lazily created threads fill there), every --sample-s
seconds, and at the end.

The model's worker process (policy_process: child, the default; found as vla_node's child running
`python -m vla_ros.core.policy_process`) is sampled too: worker_rss_mb_after_warmup, _end,
worker_rss_growth_mb (None when it was restarted in between: worker_restarted), and counts in
meets_target with the same limit.
Figures: rss_mb_after_warmup, rss_mb_end, rss_growth_mb (end minus after warm-up),
rss_slope_mb_per_min (least squares over the samples after the warm-up), threads_/fds_start,
_after_warmup, _end, dds_entities_start/_after_warmup/_end, growing (what other than RSS ended
above its after-warm-up value; threads: threads_new_lasting > 0), meets_target (RSS growth <=
target_rss_growth_mb and nothing else growing), goals and goal_outcomes (termination reason ->
count) and a short samples series. vla_node starts a few threads on each activation and ends them on
deactivation (each episode re-arms it), so its plain thread count differs by one from episode to
episode; threads_lasting counts the threads also alive at the previous sample (an earlier episode),
and threads_new_lasting those alive at the end, started after the warm-up sample, that outlived an
episode: a leaked thread.
The last stdout line is one JSON object. Exit 0 when the run completed, whether or not it meets the
target; 1 on an error of the stack, 130 when interrupted (partial JSON still printed). The stack is
always stopped, and no process of it may survive (stack_stopped_cleanly).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TARGET_RSS_GROWTH_MB = 5.0
MAX_SAMPLES_REPORTED = 40
FIRST_SEED = 1000


# ------------------------------------------------------------------------------ process figures
@dataclass
class ProcSample:
    rss_mb: float
    threads: int
    fds: int


def read_proc(pid: int) -> ProcSample:
    """VmRSS, thread count and open file descriptors of `pid`, straight from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return ProcSample(rss_mb=int(fields["VmRSS"][0]) / 1024.0, threads=int(fields["Threads"][0]),
                      fds=len(os.listdir(f"/proc/{pid}/fd")))


def settled_proc(pid: int, reads: int = 3, gap_s: float = 0.2) -> ProcSample:
    """A few reads: the lowest thread and fd counts (a leak persists, a short-lived thread or file
    of the moment does not) and the last RSS."""
    samples = []
    for i in range(reads):
        if i:
            time.sleep(gap_s)
        samples.append(read_proc(pid))
    return ProcSample(rss_mb=samples[-1].rss_mb, threads=min(s.threads for s in samples),
                      fds=min(s.fds for s in samples))


def thread_ids(pid: int) -> set[int]:
    """The ids of the threads of `pid` now."""
    return {int(tid) for tid in os.listdir(f"/proc/{pid}/task")}


def find_process(pgid: int, executable: str) -> int | None:
    """The pid in process group `pgid` whose command line runs `executable` (an argument with that
    basename: launch_ros runs `python3 .../lib/vla_ros/vla_node --ros-args ...`)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            args = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if "--ros-args" in args:  # remappings such as __node:=vla_node name no executable
            args = args[:args.index("--ros-args")]
        if any(os.path.basename(a) == executable for a in args):
            return int(stat.parent.name)
    return None


def find_worker(parent: int) -> int | None:
    """The policy worker process (python -m vla_ros.core.policy_process) whose parent is `parent`."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{parent}\n" not in status.read_text():
                continue
            if b"vla_ros.core.policy_process" in (status.parent / "cmdline").read_bytes():
                return int(status.parent.name)
        except OSError:
            continue
    return None


# ------------------------------------------------------------------------------ ROS graph figures
def dds_entities(node) -> dict[str, int]:
    """Nodes, topics, publishers and subscriptions over all topics, and services in the graph."""
    topics = node.get_topic_names_and_types()
    return {
        "nodes": len(node.get_node_names_and_namespaces()),
        "topics": len(topics),
        "publishers": sum(node.count_publishers(name) for name, _ in topics),
        "subscriptions": sum(node.count_subscribers(name) for name, _ in topics),
        "services": len(node.get_service_names_and_types()),
    }


def settled_dds(node, tries: int = 5, gap_s: float = 0.2) -> dict[str, int]:
    """The graph once two reads in a row agree (discovery is eventually consistent)."""
    previous = dds_entities(node)
    for _ in range(tries):
        time.sleep(gap_s)
        current = dds_entities(node)
        if current == previous:
            break
        previous = current
    return previous


# ------------------------------------------------------------------------------ verdict
def growing(after_warmup: dict[str, float], end: dict[str, float]) -> list[str]:
    """Names of the figures (other than RSS) that ended above their after-warm-up value."""
    return sorted(k for k, v in end.items() if k != "rss_mb" and v > after_warmup.get(k, v))


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute; None for fewer than 2 times."""
    if len({t for t, _ in points}) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    num = sum((t - mean_t) * (v - mean_v) for t, v in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return num / den * 60.0


def thin(series: list, limit: int = MAX_SAMPLES_REPORTED) -> list:
    """At most `limit` entries, evenly spread, the first and the last kept."""
    if len(series) <= limit:
        return series
    step = (len(series) - 1) / (limit - 1)
    return [series[round(i * step)] for i in range(limit)]


# ------------------------------------------------------------------------------ the run
class Soak:
    """Samples the vla_node process and the graph; `report` compares the after-warm-up and end samples."""

    def __init__(self, pid: int, observer, t0: float):
        self.pid, self.observer, self.t0 = pid, observer, t0
        self.series: list[dict] = []
        self.marks: dict[str, dict] = {}  # "start", "after_warmup", "end" -> sample
        self.loop_start = self.loop_end = t0  # the goal loop, for "minutes"
        self._tids: list[tuple[int, set[int]]] = []  # (goals, thread ids) per sample
        self._mark_tids: dict[str, set[int]] = {}

    def _earlier(self, goals: int) -> set[int] | None:
        """The thread ids at the last sample of an earlier episode."""
        earlier = [ids for g, ids in self._tids if g < goals]
        return earlier[-1] if earlier else None

    def _lasting(self, goals: int, tids: set[int]) -> int | None:
        """Threads also alive at the last sample of an earlier episode (see the module doc)."""
        earlier = self._earlier(goals)
        return None if earlier is None else len(tids & earlier)

    def new_lasting_threads(self) -> int:
        """Threads alive at the end, started after the warm-up sample, that outlived an episode."""
        end, warm = self._mark_tids["end"], self._mark_tids["after_warmup"]
        earlier = self._earlier(self.marks["end"]["goals"]) or set()
        return len((end & earlier) - warm)

    def sample(self, goals: int, mark: str | None = None, settle_s: float = 1.0) -> dict:
        time.sleep(settle_s)  # every sample alike: the goal just ended has finished its clean-up
        proc = settled_proc(self.pid)
        tids = thread_ids(self.pid)
        worker = find_worker(self.pid)
        try:
            worker_rss = None if worker is None else round(read_proc(worker).rss_mb, 2)
        except OSError:
            worker_rss = None
        entry = {"t_s": round(time.monotonic() - self.t0, 1), "goals": goals,
                 "rss_mb": round(proc.rss_mb, 2), "worker_pid": worker, "worker_rss_mb": worker_rss,
                 "threads": proc.threads,
                 "threads_lasting": self._lasting(goals, tids), "fds": proc.fds,
                 "dds": settled_dds(self.observer)}
        self.series.append(entry)
        self._tids.append((goals, tids))
        if mark:
            self.marks[mark] = entry
            self._mark_tids[mark] = tids
        return entry

    @staticmethod
    def flat(entry: dict) -> dict[str, float]:
        dds = {f"dds_{k}": v for k, v in entry["dds"].items()}
        return {"rss_mb": entry["rss_mb"], "fds": entry["fds"], **dds}

    def report(self) -> dict:
        start, warm, end = (self.marks.get(k) for k in ("start", "after_warmup", "end"))
        out: dict = {}
        for name, entry in (("start", start), ("after_warmup", warm), ("end", end)):
            if entry is not None:
                out[f"rss_mb_{name}"] = entry["rss_mb"]
                out[f"threads_{name}"] = entry["threads"]
                if entry["threads_lasting"] is not None:
                    out[f"threads_lasting_{name}"] = entry["threads_lasting"]
                out[f"fds_{name}"] = entry["fds"]
                out[f"dds_entities_{name}"] = entry["dds"]
        if warm is not None and end is not None:
            new_threads = self.new_lasting_threads()
            grown = sorted(growing(self.flat(warm), self.flat(end)) + (["threads"] if new_threads else []))
            out["threads_new_lasting"] = new_threads
            rss_growth = round(end["rss_mb"] - warm["rss_mb"], 2)
            after = [(e["t_s"], e["rss_mb"]) for e in self.series if e["t_s"] >= warm["t_s"]]
            slope = slope_per_min(after)
            meets = rss_growth <= TARGET_RSS_GROWTH_MB and not grown
            if warm["worker_rss_mb"] is not None:  # the model's worker process (policy_process: child)
                worker_growth = None
                if end["worker_rss_mb"] is not None and end["worker_pid"] == warm["worker_pid"]:
                    worker_growth = round(end["worker_rss_mb"] - warm["worker_rss_mb"], 2)
                out.update(worker_rss_mb_after_warmup=warm["worker_rss_mb"],
                           worker_rss_mb_end=end["worker_rss_mb"], worker_rss_growth_mb=worker_growth,
                           worker_restarted=end["worker_pid"] != warm["worker_pid"])
                meets = meets and worker_growth is not None and worker_growth <= TARGET_RSS_GROWTH_MB
            out.update(rss_growth_mb=rss_growth,
                       rss_slope_mb_per_min=None if slope is None else round(slope, 3),
                       growing=grown, meets_target=meets)
        keys = ("t_s", "goals", "rss_mb", "worker_rss_mb", "threads", "threads_lasting", "fds")
        out["samples"] = [{k: e[k] for k in keys} for e in thin(self.series)]
        return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vla_ros.bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=None, help="time running goals (default 10; quick 0.5)")
    p.add_argument("--quick", action="store_true", help="about a minute in all; warm-up of 2 goals")
    p.add_argument("--checkpoint", default="", help="checkpoint directory (default: the default checkpoint)")
    p.add_argument("--seed", type=int, default=FIRST_SEED, help="seed of the first episode (then +1 each)")
    p.add_argument("--timeout", type=float, default=10.0, help="goal time limit, s (the sim's episodes: 10)")
    p.add_argument("--warmup-goals", type=int, default=None, help="goals in the warm-up (default 5; quick 2)")
    p.add_argument("--warmup-s", type=float, default=None, help="least warm-up time, s (default 60; quick 0)")
    p.add_argument("--sample-s", type=float, default=None, help="sampling period, s (default 30; quick 10)")
    p.add_argument("--interface", choices=("auto", "action", "topic"), default="auto",
                   help="how goals reach vla_node: the ExecuteInstruction action (auto, where built) or "
                        "the ~/instruction topic (tells a growth in the action server from one elsewhere)")
    p.add_argument("--no-rearm", action="store_true",
                   help="keep vla_node active between episodes (default: deactivate/activate around each "
                        "sim reset, as eval-ros does); tells a growth per activation from one per goal")
    p.add_argument("--log", default="out/soak/launch.log", help="where the nodes' output goes")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    return p


def _settings(args: argparse.Namespace) -> dict:
    quick = args.quick
    return {
        "minutes_requested": args.minutes if args.minutes is not None else (0.5 if quick else 10.0),
        "warmup_goals": args.warmup_goals if args.warmup_goals is not None else (2 if quick else 5),
        "warmup_s": args.warmup_s if args.warmup_s is not None else (0.0 if quick else 60.0),
        "sample_s": args.sample_s if args.sample_s is not None else (10.0 if quick else 30.0),
        "timeout_s": args.timeout, "seed": args.seed, "quick": quick, "interface": args.interface,
        "rearm": not args.no_rearm,
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _ignore_signals() -> None:
    """A second Ctrl-C must not cut the shutdown short: that would leave the nodes running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _run_goals(client, soak: Soak, settings: dict, outcomes: dict[str, int]) -> None:
    """Episodes back to back until the time is up, the warm-up is over and two goals followed it."""
    goals, warm_at = 0, None  # warm_at: goals run when the warm-up ended
    end_at = soak.loop_start + settings["minutes_requested"] * 60.0
    next_sample = 0.0
    while time.monotonic() < end_at or warm_at is None or goals < warm_at + 2:
        seed = settings["seed"] + goals
        episode = client.reset_episode(seed, rearm=settings["rearm"])
        result, _ = client.run_goal(episode["instruction"], settings["timeout_s"], seed=seed)
        goals += 1
        outcomes[result.reason] = outcomes.get(result.reason, 0) + 1
        soak.loop_end = now = time.monotonic()
        _say(f"soak: goal {goals} seed {seed}: {result.reason} in {result.episode_time_s:.1f} s")
        if warm_at is None:
            if goals >= settings["warmup_goals"] and now - soak.loop_start >= settings["warmup_s"]:
                warm_at = goals
                _say(f"soak: after warm-up {soak.sample(goals, 'after_warmup')}")
                next_sample = now + settings["sample_s"]
        elif now >= next_sample:
            _say(f"soak: {soak.sample(goals)}")
            next_sample = now + settings["sample_s"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    if settings["minutes_requested"] < 0 or settings["warmup_goals"] < 1 or settings["sample_s"] <= 0:
        _say("soak: --minutes must be >= 0, --warmup-goals >= 1, --sample-s > 0")
        return 2
    from vla_ros.tools.demo import check_checkpoint

    try:
        checkpoint = check_checkpoint(args.checkpoint)
    except FileNotFoundError as exc:
        _say(f"soak: {exc}\n  build the default checkpoint with `make checkpoint`")
        return 2
    # Ctrl-C and SIGTERM both raise KeyboardInterrupt here; rclpy's own handlers stay off (they
    # would shut the context down under the client), so the finally below stops the stack.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from vla_ros.tools.sim_session import EpisodeClient, SimStack, process_group_alive, refuse_second_stack

    stack = SimStack({"checkpoint": checkpoint, "seed": args.seed, "goal_timeout_s": args.timeout,
                      "status_rate_hz": 20.0}, log_path=Path(args.log))
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    t_begin = time.monotonic()
    client = observer = soak = None
    outcomes: dict[str, int] = {}
    result: dict = {"benchmark": "soak", "checkpoint": checkpoint, **settings}
    code = 0
    try:
        observer = rclpy.create_node("vla_ros_soak_observer")
        client = EpisodeClient("vla_ros_soak_client", interface=settings["interface"])
        refuse_second_stack(client)
        stack.start()
        client.wait_ready(args.startup_timeout, alive=stack.alive)
        pid = find_process(stack.proc.pid, "vla_node")
        if pid is None:
            raise RuntimeError("no vla_node process in the launch's process group")
        result.update(vla_node_pid=pid, startup_s=round(time.monotonic() - t_begin, 1),
                      interface=client.goals.interface)
        _say(f"soak: stack ready after {result['startup_s']} s; vla_node pid {pid}")
        soak = Soak(pid, observer, time.monotonic())
        _say(f"soak: start {soak.sample(0, 'start', settle_s=0.0)}")
        _run_goals(client, soak, settings, outcomes)
        _say(f"soak: end {soak.sample(sum(outcomes.values()), 'end')}")
    except (TimeoutError, RuntimeError, OSError) as exc:
        _say(f"soak: {exc}\n--- last lines of {args.log} ---\n{stack.log_tail()}")
        result["error"] = str(exc)
        code = 1
    except KeyboardInterrupt:
        _ignore_signals()
        _say("soak: interrupted (no end sample: a goal was running); figures so far below")
        result["interrupted"] = True
        code = 130
    finally:
        _ignore_signals()
        if client is not None:
            client.close()
        if observer is not None:
            observer.destroy_node()
        stack.stop()
        if rclpy.ok():
            rclpy.shutdown()
    clean = stack.proc is None or not process_group_alive(stack.proc.pid)
    loop_s = soak.loop_end - soak.loop_start if soak is not None else 0.0
    result.update(minutes=round(loop_s / 60.0, 2), goals=sum(outcomes.values()),
                  goal_outcomes=dict(sorted(outcomes.items())), target_rss_growth_mb=TARGET_RSS_GROWTH_MB,
                  meets_target=False)
    result.update(soak.report() if soak is not None else {})
    result.update(wall_time_s=round(time.monotonic() - t_begin, 1), stack_stopped_cleanly=clean)
    print(json.dumps(result))
    return code or (0 if clean else 1)


if __name__ == "__main__":
    sys.exit(main())
