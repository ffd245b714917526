"""Writing small test shards whose lines identify themselves."""

from __future__ import annotations

from pathlib import Path


def write_shards(directory: Path, num_shards: int, lines_per_shard: int) -> list[Path]:
    """Shards whose every line is unique ("s<shard> l<line> ..." plus a few filler words of
    varying count), so a sentence identifies its shard and line."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        lines = [
            " ".join([f"s{shard}", f"l{line}"] + ["w"] * ((shard * 7 + line * 3) % 9))
            for line in range(lines_per_shard)
        ]
        path = directory / f"news.en-{shard:05d}-of-{num_shards:05d}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
