"""The repo answers kept for a second (``api.answers``)."""

from api.answers import AnswerCache


def test_an_answer_computed_before_a_change_is_not_kept_after_it() -> None:
    cache = AnswerCache()
    before = cache.generation()  # a GET starts computing repo 1's answer...
    cache.forget(1)  # ...a request of this process changes repo 1...
    cache.put(("repo", 1, "json"), b"old", "application/json", 60, before)  # ...and the GET ends
    assert cache.get(("repo", 1, "json")) is None
    cache.put(("repo", 1, "json"), b"new", "application/json", 60, cache.generation())
    assert cache.get(("repo", 1, "json")) == (b"new", "application/json")


def test_forgetting_a_repo_leaves_the_others() -> None:
    cache = AnswerCache()
    for repo_id in (1, 2):
        cache.put(("repo", repo_id, "json"), b"%d" % repo_id, "application/json", 60, cache.generation())
    cache.forget(1)
    assert cache.get(("repo", 1, "json")) is None
    assert cache.get(("repo", 2, "json")) == (b"2", "application/json")
