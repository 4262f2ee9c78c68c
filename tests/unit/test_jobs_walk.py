"""The walk of ``spinach jobs requeue|purge --all`` over the failed store."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from spinach import _jobs_command as jobs
from spinach.job import JobInfo, JobStatus


def info(job_id: str) -> JobInfo:
    now = datetime.now(timezone.utc)
    return JobInfo(uuid.UUID(job_id), JobStatus.FAILED, "t", "q", now, 0, 0, (), {})


class Store:
    """A failed store, newest first, whose requeued jobs fail again at once."""

    def __init__(self, count: int) -> None:
        self.ids = [str(uuid.uuid4()) for _ in range(count)]
        self.operated: list[str] = []

    def read(self, limit: int, offset: int) -> list[JobInfo]:
        return [info(job_id) for job_id in self.ids[offset : offset + limit]]

    def requeue_and_fail_again(self, ids: list[str]) -> int:
        self.operated += ids
        for job_id in ids:
            self.ids.remove(job_id)
        self.ids[:0] = ids  # back at the head, as failures newer than the rest
        return len(ids)


def test_each_job_is_taken_once_though_it_fails_again_meanwhile() -> None:
    store = Store(2_500)
    before = list(store.ids)
    pages: list[int] = []
    done = jobs.on_every_failed(store.read, store.requeue_and_fail_again, pages.append, 2_500)
    assert done == 2_500
    assert sorted(store.operated) == sorted(before)
    assert pages == [1_000, 1_000, 500]


def test_the_walk_does_no_more_jobs_than_the_store_held_when_it_began() -> None:
    store = Store(10)
    total = len(store.ids)
    store.ids[:0] = [str(uuid.uuid4()) for _ in range(5)]  # new failures, at the head
    done = jobs.on_every_failed(store.read, store.requeue_and_fail_again, lambda n: None, total)
    assert done == total
