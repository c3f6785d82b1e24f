"""Image store benchmark: a cold pull and unpack, and a warm use of the cached digest.

Starts the reference registry (Debian's docker-registry) on a loopback port, pushes a test
image of `--mb` MiB (one layer built with umoci: busybox plus `--files` incompressible
files), then times `ImageStore.use` in a fresh data directory (cold:
manifest, download, unpack, checks, rename), then `--warm` times within the tag TTL (no
request), `--warm` times re-checking the tag (one manifest request, nothing downloaded), and
once by digest (no request). Prints one JSON object.

    uv run python bench/images.py
    uv run python bench/images.py --mb 80 --warm 20
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from runner.images import ImageOptions, ImageStore, Platform
from testbed.registry import Registry, build_image


async def measure(store: ImageStore, ref: str) -> tuple[float, bool, str]:
    start = time.perf_counter()
    async with store.use(ref) as image:
        elapsed = time.perf_counter() - start
    return elapsed, image.pulled, image.digest


async def run(mb: int, files: int, warm: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="baro-bench-images-"))
    registry = Registry().start()
    try:
        chunk = (mb << 20) // files
        payload = {f"data/blob{i}.bin": os.urandom(chunk) for i in range(files)}
        layout = build_image(work, files=payload)
        registry.push(layout, "bench/image", "1")
        ref = f"{registry.host}/bench/image:1"
        options = ImageOptions(insecure=frozenset({registry.host}), platform=Platform())
        store = ImageStore(work / "data", options)
        cold, pulled, digest = await measure(store, ref)
        assert pulled
        warm_times = []
        for _ in range(warm):
            elapsed, pulled, _digest = await measure(store, ref)
            assert not pulled
            warm_times.append(elapsed)
        recheck = ImageStore(work / "data", dataclasses.replace(options, tag_ttl=0.0))
        recheck_times = []
        for _ in range(warm):
            elapsed, pulled, _digest = await measure(recheck, ref)
            assert not pulled
            recheck_times.append(elapsed)
        by_digest, pulled, _digest = await measure(store, f"{registry.host}/bench/image@{digest}")
        assert not pulled
        async with store.use(ref) as image:
            size = image.size_bytes
        return {
            "image_mb": mb,
            "unpacked_bytes": size,
            "cold_pull_unpack_s": round(cold, 3),
            "cold_mb_per_s": round(size / (1 << 20) / cold, 1),
            "warm_tag_median_s": round(statistics.median(warm_times), 4),
            "warm_tag_max_s": round(max(warm_times), 4),
            "warm_tag_recheck_median_s": round(statistics.median(recheck_times), 4),
            "warm_digest_s": round(by_digest, 4),
            "warm_runs": warm,
            "blob_downloads": registry.blob_downloads("bench/image"),
        }
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=40, help="payload size of the image (MiB)")
    parser.add_argument("--files", type=int, default=8, help="payload files")
    parser.add_argument("--warm", type=int, default=10, help="warm uses to time")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.mb, args.files, args.warm)), indent=2))


if __name__ == "__main__":
    main()
