"""Prometheus metrics of the API server, on their own registry (one per server instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cinetron_api_requests", "RPCs by method and status code", ["rpc", "code"], registry=r
        )
        self.queue_depth = Gauge(
            "cinetron_api_queue_depth", "generations waiting for a slot", registry=r
        )
        self.running = Gauge("cinetron_api_running", "generations in flight", registry=r)
        self.step_seconds = Histogram(
            "cinetron_api_step_seconds",
            "one denoising step, seen by the API server",
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.first_progress_seconds = Histogram(
            "cinetron_api_time_to_first_progress_seconds",
            "admission to the first progress event (queue + prompt encoding + one step)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.generation_seconds = Histogram(
            "cinetron_api_generation_seconds",
            "admission to the finished MP4",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.videos = Counter("cinetron_api_videos_generated", "finished videos", registry=r)
        self.outcomes = Counter(
            "cinetron_api_generations",
            "generations by outcome (completed, cancelled, deadline_exceeded, unavailable, failed)",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "cinetron_api_rejected", "requests refused because the queue was full", registry=r
        )
        self.http_requests = Counter(
            "cinetron_api_http_requests",
            "HTTP requests (/v1/videos, the preview page) by route and status",
            ["route", "status"],
            registry=r,
        )

        # Jobs, from the job store: with PostgreSQL these count the queue every replica
        # shares (each replica reports the same numbers; the HPA reads their max).
        self.jobs_queued = Gauge(
            "cinetron_api_jobs_queued",
            "jobs waiting to be claimed or started, whole store",
            registry=r,
        )
        self.jobs_running = Gauge(
            "cinetron_api_jobs_running", "jobs running on any replica, whole store", registry=r
        )
        self.job_reclaims = Counter(
            "cinetron_api_job_reclaims",
            "jobs this replica took over from a replica whose lease expired (or a dead process)",
            registry=r,
        )
        self.lease_renewals = Counter(
            "cinetron_api_job_lease_renewals", "job leases this replica renewed", registry=r
        )
        self.leases_lost = Counter(
            "cinetron_api_job_leases_lost",
            "runs abandoned because another replica had taken the job over (fenced out)",
            registry=r,
        )
        self.videos_missing = Counter(
            "cinetron_api_job_videos_missing",
            "SUCCEEDED jobs whose video was gone from the video store (answered DATA_LOSS)",
            registry=r,
        )
        self.video_store_errors = Counter(
            "cinetron_api_video_store_errors",
            "video-store operations that failed (put: the job FAILED; delete: an orphan object)",
            ["op"],
            registry=r,
        )
        self.jobs_expired = Counter(
            "cinetron_api_jobs_expired", "finished jobs deleted by the retention TTL", registry=r
        )

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)
