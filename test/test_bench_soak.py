"""The soak benchmark's measuring functions (vla_ros/bench/soak.py), each on something known: the /proc
sampler on this process, the process finder on a child, the ROS graph counter on a node and topic
made here, and the verdict. The soak itself (minutes of closed loop) is not run here."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="needs the ROS 2 runtime on PYTHONPATH (see README)")

from vla_ros.bench.soak import (  # noqa: E402
    Soak,
    dds_entities,
    find_process,
    growing,
    read_proc,
    settled_proc,
    slope_per_min,
    thin,
    thread_ids,
)


def test_proc_sampler_sees_this_process_and_counts_an_fd_and_a_thread(tmp_path):
    before = read_proc(os.getpid())
    assert before.rss_mb > 1.0 and before.threads >= 1 and before.fds >= 3
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    with open(tmp_path / "held", "w"):
        worker.start()
        try:
            during = read_proc(os.getpid())
            tids = thread_ids(os.getpid())
        finally:
            stop.set()
            worker.join()
    assert during.fds == before.fds + 1
    assert during.threads == before.threads + 1
    assert len(tids) == during.threads and worker.native_id in tids
    assert read_proc(os.getpid()).fds == before.fds


def test_settled_proc_keeps_lasting_counts(tmp_path):
    with open(tmp_path / "held", "w"):
        held = settled_proc(os.getpid(), reads=2, gap_s=0.05)
    assert held.fds == settled_proc(os.getpid(), reads=2, gap_s=0.05).fds + 1


def test_find_process_by_executable_in_its_process_group():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "/no/such/lib/vla_node"],
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 5.0
        while find_process(child.pid, "vla_node") is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the exec may not have happened yet
        assert find_process(child.pid, "vla_node") == child.pid
        assert find_process(child.pid, "sim_robot_node") is None
        assert find_process(os.getpgid(0), "vla_node") is None  # another group
    finally:
        child.kill()
        child.wait()


def test_dds_counter_sees_a_node_and_a_topic_made_here(rclpy_context):
    from std_msgs.msg import String

    observer = rclpy.create_node("soak_test_observer", context=rclpy_context)
    probe = None
    try:
        before = dds_entities(observer)
        assert before["nodes"] >= 1 and before["services"] >= 1  # the observer's parameter services
        probe = rclpy.create_node("soak_test_probe", context=rclpy_context)
        probe.create_publisher(String, f"/soak_test_probe_{os.getpid()}", 10)
        probe.create_subscription(String, f"/soak_test_probe_{os.getpid()}", lambda _: None, 10)
        expected = {"nodes": 1, "topics": 1, "publishers": 1, "subscriptions": 1}
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            after = dds_entities(observer)
            if all(after[k] >= before[k] + n for k, n in expected.items()):
                break
            time.sleep(0.1)
        for key, n in expected.items():
            assert after[key] >= before[key] + n, (key, before, after)
        assert after["services"] > before["services"]  # the probe's parameter services
    finally:
        if probe is not None:
            probe.destroy_node()
        observer.destroy_node()


def _parked_thread() -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    return thread, stop


def _wait_until_seen(observer, timeout_s: float = 10.0) -> None:
    """Until the observer sees itself in the graph (its own discovery is not immediate)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if observer.get_name() in [name for name, _ in observer.get_node_names_and_namespaces()]:
            return
        time.sleep(0.1)
    raise AssertionError(f"node {observer.get_name()!r} never saw itself in the graph")


def test_soak_counts_a_thread_that_outlives_its_episode_not_one_that_ends_with_it(rclpy_context):
    observer = rclpy.create_node("soak_test_threads", context=rclpy_context)
    threads = []
    try:
        _wait_until_seen(observer)
        soak = Soak(os.getpid(), observer, time.monotonic())
        episode_thread = _parked_thread()  # one episode's thread: ends before the next sample
        threads.append(episode_thread)
        soak.sample(0, "start", settle_s=0.0)
        episode_thread[1].set()
        episode_thread[0].join()
        soak.sample(1, "after_warmup", settle_s=0.0)
        threads.append(_parked_thread())  # the leak: started after the warm-up, never ends
        soak.sample(2, settle_s=0.0)
        threads.append(_parked_thread())  # the last episode's own thread
        soak.sample(3, "end", settle_s=0.0)
        report = soak.report()
        assert report["threads_new_lasting"] == 1
        # Only the process figures: the graph is shared with whatever else runs in this test session's
        # domain (CI saw nodes of an earlier test's child appear mid-test); its counter is tested above.
        process_growing = [name for name in report["growing"] if not name.startswith("dds_")]
        assert process_growing == ["threads"] and not report["meets_target"]
        assert report["threads_end"] == report["threads_after_warmup"] + 2
        assert report["threads_lasting_end"] == report["threads_lasting_after_warmup"] + 1
    finally:
        for thread, stop in threads:
            stop.set()
            thread.join()
        observer.destroy_node()


def test_verdict_names_what_grew_besides_rss():
    warm = {"rss_mb": 300.0, "threads": 20, "fds": 40, "dds_nodes": 4}
    assert growing(warm, {**warm, "rss_mb": 400.0, "fds": 39}) == []
    assert growing(warm, {**warm, "threads": 21, "dds_nodes": 5}) == ["dds_nodes", "threads"]
    assert slope_per_min([(0.0, 100.0), (60.0, 101.0), (120.0, 102.0)]) == pytest.approx(1.0)
    assert slope_per_min([(5.0, 1.0)]) is None
    series = list(range(100))
    assert thin(series, 10)[0] == 0 and thin(series, 10)[-1] == 99 and len(thin(series, 10)) == 10
    assert thin(series[:5], 10) == series[:5]


def test_settings_carry_the_interface_and_rearm_choice_into_the_report():
    from vla_ros.bench.soak import _settings, build_parser

    default = _settings(build_parser().parse_args(["--quick"]))
    assert default["interface"] == "auto" and default["rearm"] is True
    chosen = _settings(build_parser().parse_args(["--quick", "--interface", "topic", "--no-rearm"]))
    assert chosen["interface"] == "topic" and chosen["rearm"] is False


def test_soak_samples_the_policy_worker_and_a_restart_voids_its_growth(rclpy_context):
    from core_doubles import wait_until

    from vla_ros.bench.soak import find_worker
    from vla_ros.core.policy_process import ChildProcessPolicy

    observer = rclpy.create_node("soak_test_worker", context=rclpy_context)
    policy = ChildProcessPolicy("vla_ros.core.scripted_policy:ScriptedPolicy")
    try:
        first = policy.process_info()["pid"]
        assert find_worker(os.getpid()) == first
        soak = Soak(os.getpid(), observer, time.monotonic())
        for goals, mark in ((0, "start"), (1, "after_warmup"), (2, "end")):
            soak.sample(goals, mark, settle_s=0.0)
        report = soak.report()
        assert report["worker_rss_mb_after_warmup"] > 1.0 and report["worker_restarted"] is False
        assert report["worker_rss_growth_mb"] == round(report["worker_rss_mb_end"]
                                                       - report["worker_rss_mb_after_warmup"], 2)
        os.kill(first, 9)  # a restart between the samples: the growth cannot be told
        with pytest.raises(Exception, match="died during reset"):
            policy.reset()
        assert wait_until(lambda: policy.process_info()["state"] == "ready", 10.0)
        soak.sample(3, "end", settle_s=0.0)
        report = soak.report()
        assert report["worker_restarted"] is True and report["worker_rss_growth_mb"] is None
        assert not report["meets_target"]
    finally:
        policy.close()
        observer.destroy_node()
