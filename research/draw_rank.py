"""Shared by the reduced-precision comparisons (bf16_rank.py, cpu_f16_null_table.py,
scale_dtype_table.py): reading a gpu_families.sh runs archive, and the rank test of "is this run
one more draw of the published code's rounding spread?"."""
import json, math, statistics, tarfile


def archive_runs(path):
    """Every JSON of a runs archive (.tar.xz), by file name without .json."""
    runs = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            name = m.name.rsplit("/", 1)[-1]
            if name.endswith(".json"):
                runs[name[:-5]] = json.load(tar.extractfile(m))
    return runs


def rank_and_z(value, draws):
    """The rank of `value` among `draws` (1 = below all of them, len + 1 = above all) and its distance
    from their mean in their standard deviations (nan with fewer than two draws or no spread)."""
    rank = 1 + sum(d < value for d in draws)
    sd = statistics.stdev(draws) if len(draws) > 1 else float("nan")
    z = (value - statistics.mean(draws)) / sd if sd > 0 else float("nan")
    return rank, z


def extreme_tail(extreme, rows, n_draws):
    """Chance of at least `extreme` of `rows` ranks being lowest or highest among n_draws + 1 values
    when every rank is uniform: (p each, P(at least extreme))."""
    p = 2 / (n_draws + 1)
    return p, sum(math.comb(rows, k) * p**k * (1 - p) ** (rows - k) for k in range(extreme, rows + 1))
