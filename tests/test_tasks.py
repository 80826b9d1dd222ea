"""Evaluation item builders: determinism, disjoint splits, valid and balanced answers."""

import collections
import dataclasses
import re

import pytest

from attractor_jax.data import NOVELS
from attractor_jax.errors import InputError
from attractor_jax.evals import tasks


def _strings(item):
  for value in dataclasses.astuple(item):
    yield from value if isinstance(value, tuple) else [value]


def _check_choices(items, n):
  assert len(items) == n
  for item in items:
    assert len(item.choices) == tasks.N_CHOICES == len(set(item.choices))
    assert 0 <= item.answer < tasks.N_CHOICES
    assert all(c.startswith(" ") and c.strip() for c in item.choices)
    assert all(s.strip() for s in _strings(item) if isinstance(s, str))
  counts = collections.Counter(item.answer for item in items)
  assert max(counts.values()) - min(counts.values()) <= 1
  assert len(counts) == min(n, tasks.N_CHOICES)


@pytest.fixture(scope="module")
def comprehension():
  return tasks.comprehension_items()


def test_comprehension_defaults_give_balanced_valid_items(comprehension):
  _check_choices(comprehension, 240)
  kinds = collections.Counter(item.question.split()[0] for item in comprehension)
  assert kinds == {"Where": 80, "Who": 80, "What": 80}
  for k, item in enumerate(comprehension):
    assert 3 <= item.context.count(".") <= 6
    assert _in_story(item)[item.answer] and sum(_in_story(item)) == 1 + k % 2  # (0, 1) cycle


def _in_story(item) -> list[bool]:
  """Per choice: does the story mention its entity?"""
  return [re.search(rf"\b{c.split()[-1]}\b", item.context) is not None for c in item.choices]


@pytest.mark.parametrize("story_distractors", [(3,), (0,), (2, 0, 1)])
def test_comprehension_draws_the_asked_number_of_distractors_from_the_story(story_distractors):
  items = tasks.comprehension_items(n=90, story_distractors=story_distractors)
  _check_choices(items, 90)
  for k, item in enumerate(items):
    assert _in_story(item)[item.answer]
    assert sum(_in_story(item)) == 1 + story_distractors[k % len(story_distractors)]


@pytest.mark.parametrize("bad", [(), (4,), (0, -1)])
def test_comprehension_rejects_impossible_story_distractor_counts(bad):
  with pytest.raises(InputError, match=r"story_distractors=.* must be counts in 0..3"):
    tasks.comprehension_items(story_distractors=bad)


def test_comprehension_asks_one_question_per_story(comprehension):
  assert sorted(item.cluster for item in comprehension) == list(range(len(comprehension)))
  assert len({item.context for item in comprehension}) == len(comprehension)


@pytest.mark.parametrize("story_distractors", [(0, 1), (3,)])
def test_comprehension_answers_follow_the_story(story_distractors):
  for item in tasks.comprehension_items(n=90, seed=3, story_distractors=story_distractors):
    answer = item.choices[item.answer].strip()
    words = item.question.rstrip("?").split()
    if words[0] == "Where":  # the object's last mention names where it is
      last = [s for s in item.context.split(". ") if f"the {words[3]} " in s][-1]
      assert last.rstrip(".").endswith(answer)
    elif words[0] == "Who":
      took = rf"{answer} took the {words[3]} from the \w+ to the {words[-1]}\."
      assert re.search(took, item.context)
    else:
      assert f"{words[2]} put {answer} in the {words[-1]}." in item.context


def test_comprehension_is_deterministic_and_splits_are_disjoint(comprehension):
  assert tasks.comprehension_items() == comprehension
  assert tasks.comprehension_items(seed=1) != comprehension
  calibration = tasks.comprehension_items(split="calibration")
  assert not {i.context for i in calibration} & {i.context for i in comprehension}
  for seed in range(1, 4):
    test = tasks.comprehension_items(n=100, seed=seed)
    assert not {i.context for i in calibration} & {i.context for i in test}
  with pytest.raises(InputError):
    tasks.comprehension_items(split="train")


@pytest.mark.parametrize("novel", NOVELS)
def test_cloze_targets_occur_earlier_and_are_cut_off(novel):
  items = tasks.cloze_items(novel, n=200)
  assert len(items) == 200 == len({(i.context, i.target) for i in items})
  for item in items:
    word = item.target[1:]
    assert item.target == " " + word and word.isalpha() and len(word) >= 4
    assert word.lower() not in tasks._STOPWORDS
    assert re.search(rf"\b{word}\b", item.context)
    assert not item.context.endswith(word)
    assert 60 <= len(item.context.split()) <= 120
    assert item.context[-1] != " "
  assert len({i.cluster for i in items}) > 10


def test_cloze_is_deterministic_and_respects_length():
  items = tasks.cloze_items("persuasion", n=30, seed=4, context_words=(20, 30))
  assert items == tasks.cloze_items("persuasion", n=30, seed=4, context_words=(20, 30))
  assert items != tasks.cloze_items("persuasion", n=30, seed=5, context_words=(20, 30))
  assert all(20 <= len(i.context.split()) <= 30 for i in items)
  with pytest.raises(InputError):
    tasks.cloze_items("persuasion", context_words=(30, 20))
  with pytest.raises(InputError):
    tasks.cloze_items("persuasion", n=10**6)


def _kv_key(item):
  return re.fullmatch(r"What is the key for the (\w+)\?", item.question).group(1)


@pytest.mark.parametrize(("n_pairs", "distance"), [(1, 0), (2, 8), (4, 0), (16, 32), (24, 3)])
def test_kv_recall_value_is_stated_once_for_its_key(n_pairs, distance):
  items = tasks.kv_recall_items(n_pairs, distance, n=21)
  _check_choices(items, 21)
  for item in items:
    key, value = _kv_key(item), item.choices[item.answer].strip()
    assert len(re.findall(r"The key for the \w+ is \w+\.", item.context)) == n_pairs
    assert len(re.findall(rf"\b{key}\b", item.context)) == 1
    assert len(re.findall(rf"\b{value}\b", item.context)) == 1
    assert f"The key for the {key} is {value}." in item.context
    stated = set(re.findall(r"is (\w+)\.", item.context))
    assert sum(c.strip() in stated for c in item.choices) == min(n_pairs, tasks.N_CHOICES)
    filler = item.context.partition("\n\n")[2]
    assert len(re.findall(r"[.!?:](?:\s|$)", filler)) >= distance
  assert items == tasks.kv_recall_items(n_pairs, distance, n=21)


def test_kv_recall_grid_shape():
  grid = tasks.kv_recall_grid(n=5)
  assert list(grid) == [(p, d) for p in (2, 4, 8, 16) for d in (0, 8, 32)]
  assert all(len(items) == 5 for items in grid.values())
  with pytest.raises(InputError):
    tasks.kv_recall_items(25, 0)


def test_fact_recall_items():
  items = tasks.fact_recall_items()
  _check_choices(items, 40)
  assert items == tasks.fact_recall_items()
  assert len({i.fact for i in items}) == 40
  for item in items:
    assert item.prompt.startswith(item.fact + "\n\n")
    colour, obj, place = re.fullmatch(
        r"Remember this: the (\w+) (\w+) is in the (\w+)\.", item.fact).groups()
    right = f" the {place}" if item.question.startswith("Where") else f" {colour}"
    assert item.choices[item.answer] == right and obj in item.question
    assert item.question_prompt(" Then.").endswith(f"Then.\n\nQuestion: {item.question}\nAnswer:")


def test_topic_switch_prompts():
  items = tasks.topic_switch_prompts()
  assert len(items) == 8 and items == tasks.topic_switch_prompts()
  assert len({(i.topic_a, i.topic_b) for i in items}) == 8
  for item in items:
    assert item.topic_a != item.topic_b and all(s.strip() for s in _strings(item))
    assert item.text_b.startswith("\n\n") and item.prompt == item.text_a + item.text_b
    assert sum(s in item.text_a for s in tasks._TOPICS[item.topic_a]) == 5
    assert sum(s in item.text_b for s in tasks._TOPICS[item.topic_b]) == 5
  with pytest.raises(InputError):
    tasks.topic_switch_prompts(n=31)


def test_chapter_text_is_one_chapter_without_its_heading():
  assert tasks.chapter_text("emma", 0).startswith("Emma Woodhouse, handsome, clever, and rich")
  first, second = (tasks.chapter_text("persuasion", k) for k in (0, 1))
  assert first.startswith("Sir Walter Elliot") and not second.startswith("Sir Walter Elliot")
  with pytest.raises(InputError, match="index=24: persuasion has chapters 0..23"):
    tasks.chapter_text("persuasion", 24)
