"""Publishing a bag over DDS with its recorded timing (``moe-perception play``).

For machines without ``ros2 bag play`` (which is the standard tool and plays these bags
the same way). The only module of this package besides ``moe_perception.ros`` that
imports rclpy, and only inside :func:`play`.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_perception.bags.bagfile import InputBag

# How long play waits, on exit, for subscribers to acknowledge the last messages.
ACK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PlayOptions:
    """How ``play`` publishes.

    Attributes:
        rate: speed factor; 2 plays twice as fast as recorded.
        loop: start again after the last message, until stopped.
        topics: publish only these topics (``None``: all).
        delay_s: wait this long after creating the publishers (for discovery).
        wait_for_subscribers_s: wait up to this long until every publisher has a
            subscriber (0: do not wait).
        node_name: the name of the publishing node.
        qos_depth: history depth of the (reliable, volatile) publishers.
    """

    rate: float = 1.0
    loop: bool = False
    topics: tuple[str, ...] | None = None
    delay_s: float = 0.0
    wait_for_subscribers_s: float = 0.0
    node_name: str = "moe_perception_player"
    qos_depth: int = 10

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if self.delay_s < 0 or self.wait_for_subscribers_s < 0:
            raise ValueError("delay and wait time must not be negative")
        if self.qos_depth < 1:
            raise ValueError(f"QoS depth must be at least 1, got {self.qos_depth}")


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name``.

    Raises:
        ImportError: the message package is not installed.
    """
    package, kind, name = msgtype.split("/")
    module = importlib.import_module(f"{package}.{kind}")
    return getattr(module, name)


def _sleep_until(deadline: float, stop: threading.Event) -> bool:
    """Sleep until ``deadline`` (monotonic); ``False`` if stopped first."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        return not stop.wait(remaining)
    return not stop.is_set()


def play(bag_path: str | Path, options: PlayOptions, stop: threading.Event | None = None) -> int:
    """Publish the bag's messages with their recorded spacing divided by ``rate``.

    Args:
        bag_path: the bag folder.
        options: see :class:`PlayOptions`.
        stop: set it to end playback early (e.g. from another thread).

    Returns:
        The number of messages published.

    Raises:
        ImportError: rclpy is not installed.
        FileNotFoundError, ValueError: a missing or unreadable bag, an unknown topic, or
            no topic whose message type can be imported.
    """
    try:
        import rclpy
        from rclpy.duration import Duration
        from rclpy.qos import QoSProfile, ReliabilityPolicy
    except ImportError as error:
        raise ImportError(
            "moe-perception play needs rclpy (install the 'ros' extra or source ROS 2); "
            "`ros2 bag play` plays these bags too"
        ) from error

    stop = stop or threading.Event()
    with InputBag(bag_path) as bag:
        types = {t.name: t.msgtype for t in bag.topics}
        if options.topics is not None:
            missing = [t for t in options.topics if t not in types]
            if missing:
                raise ValueError(f"topics not in bag {bag.path}: {missing}; have {sorted(types)}")
            types = {t: types[t] for t in options.topics}
        classes: dict[str, Any] = {}
        for topic, msgtype in types.items():
            try:
                classes[topic] = message_class(msgtype)
            except (ImportError, AttributeError, ValueError):
                print(
                    f"moe-perception play: skipping {topic}: cannot import {msgtype}",
                    file=sys.stderr,
                )
        if not classes:
            raise ValueError(f"no topic of {bag.path} has an importable message type")

        context = rclpy.Context()
        rclpy.init(context=context)
        published = 0
        node = None
        try:
            node = rclpy.create_node(options.node_name, context=context)
            qos = QoSProfile(depth=options.qos_depth, reliability=ReliabilityPolicy.RELIABLE)
            publishers = {
                topic: node.create_publisher(cls, topic, qos) for topic, cls in classes.items()
            }
            if options.wait_for_subscribers_s > 0:
                deadline = time.monotonic() + options.wait_for_subscribers_s
                while not all(p.get_subscription_count() > 0 for p in publishers.values()):
                    if not _sleep_until(min(deadline, time.monotonic() + 0.05), stop):
                        return published
                    if time.monotonic() >= deadline:
                        break
            if options.delay_s > 0 and not _sleep_until(time.monotonic() + options.delay_s, stop):
                return published
            while True:
                first_stamp: int | None = None
                start = time.monotonic()
                for connection, stamp_ns, data in bag.messages(list(publishers)):
                    if first_stamp is None:
                        first_stamp = stamp_ns
                    target = start + (stamp_ns - first_stamp) / 1e9 / options.rate
                    if not _sleep_until(target, stop):
                        return published
                    publishers[connection.topic].publish(bytes(data))
                    published += 1
                if not options.loop or stop.is_set() or first_stamp is None:
                    return published
        finally:
            if node is not None:
                # Reliable delivery of the last messages happens after publish() returns:
                # wait for the subscribers' acknowledgements before tearing the writers down.
                for publisher in node.publishers:
                    publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
                node.destroy_node()
            rclpy.try_shutdown(context=context)
