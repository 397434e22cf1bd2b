"""dsf_app.job_results: the bounded session caches every page keeps its results in."""

from dsf_app import job_results


def test_cache_keeps_the_most_recently_used_entries():
    cache = {}
    for i in range(job_results.LIMIT):
        job_results.remember(cache, i, f"outcome {i}")
    assert job_results.recall(cache, 0) == "outcome 0"  # now the most recent
    job_results.remember(cache, "new", "outcome new")
    assert len(cache) == job_results.LIMIT
    assert 1 not in cache and 0 in cache and job_results.recall(cache, 1) is None


def test_remembering_a_key_again_replaces_its_value_and_makes_it_the_newest():
    cache = {}
    for key in "abc":
        job_results.remember(cache, key, key.upper(), limit=3)
    job_results.remember(cache, "a", "A2", limit=3)
    job_results.remember(cache, "d", "D", limit=3)
    assert cache == {"c": "C", "a": "A2", "d": "D"} and list(cache) == ["c", "a", "d"]
