"""Call the Cinetron gRPC API from Python: stream a generation, or run it as a job.

    python examples/python_client.py "a red circle moving to the left" --out red.mp4
    python examples/python_client.py "a blue square" --job --out blue.mp4
    python examples/python_client.py "..." --token "$TOKEN" --tls-ca ca.pem --address host:443

Needs only grpcio and the generated stubs (``pip install 'cinetron[serve-api]'``); other
languages generate their own stubs from proto/cinetron/v1/video.proto.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import grpc

from cinetron.api_client import connect, pb


def show(event: pb.GenerateEvent) -> pb.Completed | None:
    kind = event.WhichOneof("event")
    if kind == "queued":
        print(f"queued: position {event.queued.position}", file=sys.stderr)
    elif kind == "progress":
        p = event.progress
        print(f"step {p.step}/{p.total}  {p.elapsed_seconds:.2f}s", file=sys.stderr)
    elif kind == "completed":
        return event.completed
    elif kind == "job_ended":
        raise SystemExit(f"job {pb.JobState.Name(event.job_ended.state)}: {event.job_ended.reason}")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("prompt")
    p.add_argument("--address", default="127.0.0.1:50051")
    p.add_argument("--out", type=Path, default=Path("video.mp4"))
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    p.add_argument("--token", help="bearer token, when the server has auth on")
    p.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) to verify the server")
    p.add_argument("--job", action="store_true", help="submit a job and watch it")
    args = p.parse_args(argv)

    request = pb.GenerateRequest(prompt=args.prompt)
    for name in ("seed", "steps", "guidance"):
        if getattr(args, name) is not None:
            setattr(request, name, getattr(args, name))
    stub = connect(args.address, token=args.token, tls_ca=args.tls_ca)  # token, request ids
    try:
        if args.job:
            submitted = stub.SubmitJob(
                pb.SubmitJobRequest(request=request, idempotency_key=uuid.uuid4().hex),
                timeout=30,
            )
            print(f"job {submitted.job.job_id}", file=sys.stderr)
            events = stub.WatchJob(
                pb.WatchJobRequest(job_id=submitted.job.job_id),
                timeout=args.timeout,
            )
        else:
            events = stub.Generate(request, timeout=args.timeout)
        for event in events:
            completed = show(event)
            if completed is not None:
                args.out.write_bytes(completed.video)
                print(
                    f"wrote {args.out}: {completed.frames} frames {completed.width}x"
                    f"{completed.height} @ {completed.fps} fps, seed {completed.seed}, "
                    f"{completed.timings['total_s']:.2f}s",
                    file=sys.stderr,
                )
                return 0
    except grpc.RpcError as e:
        hint = dict(e.trailing_metadata() or ()).get("retry-after-ms")
        retry = f" (retry after {hint} ms)" if hint else ""
        print(f"{e.code().name}: {e.details()}{retry}", file=sys.stderr)
        return 1
    print("the stream ended without a video", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
