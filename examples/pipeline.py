"""A CPU-bound pipeline: tag 100,000 order lines with a product catalogue built once per worker.

Each worker compiles the catalogue in ``on_create``: 3,000 product names in one
large regular expression, plus a precomputed table from product to category.
Tasks receive that resource and process a chunk of records each: find the
products a line mentions, look up their category, and add up the amounts.
The parent only cuts the input into chunks and merges the partial totals.

Run: python examples/pipeline.py
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass

import procpool

PRODUCTS = 3_000
RECORDS = 100_000
CHUNK = 2_000
CATEGORIES = ("books", "garden", "kitchen", "music", "sports", "tools", "toys")
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "dor")

Trie = dict[str, "Trie"]


def product_names() -> list[str]:
    """The same catalogue in every process: made-up names from a fixed seed."""
    rng = random.Random(42)
    names: set[str] = set()
    while len(names) < PRODUCTS:
        names.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(3, 5))))
    return sorted(names)


@dataclass
class Catalogue:
    """A worker's resource: the compiled matcher and the product -> category table."""

    matcher: re.Pattern[str]
    category: dict[str, str]
    build_seconds: float


def trie_pattern(words: list[str]) -> str:
    """One regular expression for many words, shaped like a trie so it matches fast.

    A plain ``a|b|c|...`` alternation tries every word at every position; the
    trie shares prefixes (``ka(?:lo|mi)``), so a match costs about the length
    of the word, however many words there are.
    """
    trie: Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def pattern(node: Trie) -> str:
        ends = "" in node
        branches = [re.escape(char) + pattern(child) for char, child in sorted(node.items())
                    if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return pattern(trie)


def load_catalogue() -> Catalogue:
    """on_create: the expensive part, done once per worker rather than once per task."""
    started = time.perf_counter()
    names = product_names()
    matcher = re.compile(rf"\b({trie_pattern(names)})\b")
    category = {name: CATEGORIES[sum(map(ord, name)) % len(CATEGORIES)] for name in names}
    return Catalogue(matcher, category, time.perf_counter() - started)


def tag_orders(catalogue: Catalogue, lines: list[str]) -> tuple[dict[str, float], int, int]:
    """A task: total amount per category in ``lines``; also lines matched and worker pid."""
    totals: dict[str, float] = defaultdict(float)
    matched = 0
    for line in lines:
        amount = float(line.rsplit(" ", 2)[1])
        found = catalogue.matcher.findall(line)
        if found:
            matched += 1
        for name in found:
            totals[catalogue.category[name]] += amount
    return dict(totals), matched, os.getpid()


def make_orders() -> list[str]:
    """The input: one product per line, in free text, like a shop's order log."""
    rng = random.Random(7)
    names = product_names()
    verbs = ("bought", "ordered", "returned", "gift-wrapped")
    return [
        f"2024-05-{1 + i % 28:02d} customer={rng.randrange(10_000)} {rng.choice(verbs)}"
        f" {rng.randint(1, 5)} x {rng.choice(names)} for {rng.uniform(1, 200):.2f} EUR"
        for i in range(RECORDS)
    ]


if __name__ == "__main__":
    orders = make_orders()
    chunks = [orders[i:i + CHUNK] for i in range(0, len(orders), CHUNK)]
    config = procpool.Config(on_create=load_catalogue, worker_count=2, resource_pool_size=0)
    started = time.perf_counter()
    with procpool.TaskManager(config) as manager:
        ready = time.perf_counter()
        build = manager.queue_task(lambda catalogue: catalogue.build_seconds).result()
        totals: dict[str, float] = defaultdict(float)
        matched = 0
        pids = set()
        for part, count, pid in manager.map(tag_orders, chunks):
            for name, amount in part.items():
                totals[name] += amount
            matched += count
            pids.add(pid)
        elapsed = time.perf_counter() - ready
        first = manager.queue_task(tag_orders, chunks[0]).result()[0]
    # The workers' answer for one chunk, checked against the same code run right here.
    assert first == tag_orders(load_catalogue(), chunks[0])[0]
    print(f"2 workers ready in {ready - started:.2f} s"
          f" (each compiled {PRODUCTS} products in {build:.2f} s, once)")
    workers = f"{len(pids)} worker{'s' if len(pids) > 1 else ''}"
    print(f"processed {len(orders)} records in {len(chunks)} tasks on {workers}"
          f" in {elapsed:.2f} s: {len(orders) / elapsed:,.0f} records/s")
    print(f"matched {matched} of {len(orders)} records"
          f" (chunk 1 checked against a run in this process)")
    for name, amount in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {name:<8} {amount:>12,.2f} EUR")
    print(f"total    {sum(totals.values()):>12,.2f} EUR")
