"""Seeded builders of evaluation items as plain text (the caller tokenizes).

Multiple-choice items are scored by ranking `choices` (continuations of "Answer:") by
log-likelihood after `item.prompt`. Every builder is pure: the same arguments give the same
items. Answer positions are balanced: over n items each index occurs n // 4 or n // 4 + 1 times.
"""

from __future__ import annotations

import itertools
import random
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from attractor_jax.data import NOVELS, load_text
from attractor_jax.errors import InputError

N_CHOICES = 4
SPLITS = ("calibration", "test")


@dataclass(frozen=True)
class ChoiceItem:
  """A passage, a question about it, and `choices[answer]` the right continuation."""
  context: str
  question: str
  choices: tuple[str, ...]
  answer: int
  cluster: int

  @property
  def prompt(self) -> str:
    return f"{self.context}\n\nQuestion: {self.question}\nAnswer:"


@dataclass(frozen=True)
class ClozeItem:
  """A passage cut right before its last word `target` (with its leading space)."""
  context: str
  target: str
  cluster: int


@dataclass(frozen=True)
class FactItem:
  """Generate from `prompt` (which states `fact`), then ask `question` with `choices`."""
  fact: str
  prompt: str
  question: str
  choices: tuple[str, ...]
  answer: int

  def question_prompt(self, continuation: str) -> str:
    return f"{self.prompt}{continuation}\n\nQuestion: {self.question}\nAnswer:"


@dataclass(frozen=True)
class TopicSwitch:
  """Passage A on `topic_a`, then passage B on `topic_b` (text_b starts with a blank line)."""
  topic_a: str
  topic_b: str
  text_a: str
  text_b: str

  @property
  def prompt(self) -> str:
    return self.text_a + self.text_b


def _check_count(**kw: int) -> None:
  for name, value in kw.items():
    if value < 1:
      raise InputError(f"{name}={value} must be >= 1")


def _positions(n: int, rng: random.Random) -> list[int]:
  """Balanced answer indices for n items, in seeded random order."""
  positions = [k % N_CHOICES for k in range(n)]
  rng.shuffle(positions)
  return positions


def _choices(answer: str, others: list[str], index: int, rng: random.Random) -> tuple[str, ...]:
  """`answer` at `index` among N_CHOICES - 1 distractors drawn from `others`."""
  picked = rng.sample(others, N_CHOICES - 1)
  picked.insert(index, answer)
  return tuple(picked)


# --- comprehension: generated stories -------------------------------------------------------

_NAMES = (
    "Mara", "Tom", "Ines", "Paul", "Lena", "Omar", "Ruth", "Hugo", "Nina", "Ivan", "Clara",
    "Felix", "Asha", "Jonas", "Greta", "Leo", "Sofia", "Amir", "Edith", "Karl", "Lucy",
    "Marco", "Vera", "Otto")
_PLACES = (
    "barn", "mill", "kitchen", "cellar", "garden", "attic", "shed", "stable", "chapel",
    "bakery", "market", "library", "orchard", "harbour", "school", "forge")
_OBJECTS = (
    "lantern", "basket", "hammer", "kettle", "ladder", "blanket", "bucket", "rope", "violin",
    "map", "candle", "saddle", "shovel", "teapot", "drum", "mirror")


def _story(rng: random.Random) -> tuple[str, list[tuple[str, str, str]], dict[str, list[str]]]:
  """A 3-6 sentence story, its questions as (question, answer, category), and the people,
  places and objects it mentions."""
  people = rng.sample(_NAMES, 4)
  places = rng.sample(_PLACES, 5)
  unused = rng.sample(_OBJECTS, 4)
  mentioned: dict[str, list[str]] = {"person": [], "place": [], "object": []}
  loc: dict[str, str] = {}  # where each placed object is
  at: dict[str, str] = {}  # where each person was last seen
  puts: list[tuple[str, str, str]] = []
  moves: list[tuple[str, str, str]] = []
  sentences = []
  for k in range(rng.randint(3, 6)):
    kinds = ["put"] if k == 0 else ["walk", "meet"] + ["put", "see"] * bool(unused)
    kind = rng.choice(kinds + ["move"] * bool(loc))
    p, p2 = rng.sample(people, 2)
    where = rng.choice(places)
    if kind == "put":
      o = unused.pop()
      loc[o] = where
      puts.append((p, o, where))
      sentences.append(f"{p} put the {o} in the {where}.")
      used = {"person": [p], "place": [where], "object": [o]}
    elif kind == "move":
      o = rng.choice(sorted(loc))
      where = rng.choice([x for x in places if x != loc[o]])
      sentences.append(f"Then {p} took the {o} from the {loc[o]} to the {where}.")
      used = {"person": [p], "place": [loc[o], where], "object": [o]}
      loc[o] = where
      moves.append((p, o, where))
    elif kind == "see":
      o = unused.pop()
      sentences.append(f"{p} saw a {o} in the {where}.")
      used = {"person": [p], "place": [where], "object": [o]}
    elif kind == "walk":
      start = at.get(p) or rng.choice([x for x in places if x != where])
      where = rng.choice([x for x in places if x != start])
      sentences.append(f"{p} walked from the {start} to the {where}.")
      used = {"person": [p], "place": [start, where], "object": []}
    else:
      sentences.append(f"{p} met {p2} near the {where}.")
      used = {"person": [p, p2], "place": [where], "object": []}
    at.update(dict.fromkeys(used["person"], where))
    for cat, names in used.items():
      mentioned[cat] += [x for x in names if x not in mentioned[cat]]
  questions = []
  if loc:
    o = rng.choice(sorted({m[1] for m in moves}) or sorted(loc))
    questions.append((f"Where is the {o} now?", loc[o], "place"))
  unique_moves = [m for m in moves if sum(m[1:] == x[1:] for x in moves) == 1]
  if unique_moves:
    p, o, where = rng.choice(unique_moves)
    questions.append((f"Who took the {o} to the {where}?", p, "person"))
  unique_puts = [m for m in puts if sum((m[0], m[2]) == (x[0], x[2]) for x in puts) == 1]
  if unique_puts:
    p, o, where = rng.choice(unique_puts)
    questions.append((f"What did {p} put in the {where}?", o, "object"))
  return " ".join(sentences), questions, mentioned


def _phrase(name: str, category: str) -> str:
  return f" {name}" if category == "person" else f" the {name}"


_POOLS = {"person": _NAMES, "place": _PLACES, "object": _OBJECTS}


def comprehension_items(n: int = 240, seed: int = 0, split: str = "test",
                        story_distractors: tuple[int, ...] = (0, 1)) -> list[ChoiceItem]:
  """Multiple-choice questions on short generated stories, one per story (cluster = story).

  The splits are disjoint: a story belongs to "calibration" or "test" by a hash of its text.
  A third of the questions each ask where an object is, who moved it, and what someone put
  somewhere. Of an item's N_CHOICES - 1 same-kind distractors (places, people, objects),
  `story_distractors[i % len(story_distractors)]` are entities the story mentions (telling them
  from the answer needs tracking who did what) and the rest entities it never mentions
  (recalling what the story said suffices). With 3 SmolLM2-135M is near chance and with none
  near ceiling; the default alternates 0 and 1, chosen on the calibration split to put `off`
  between 60% and 90% on both models (results/e4_comprehension*.json have the test split).
  """
  _check_count(n=n)
  if split not in SPLITS:
    raise InputError(f"split={split!r} must be one of {SPLITS}")
  if not story_distractors or any(not 0 <= k < N_CHOICES for k in story_distractors):
    raise InputError(f"story_distractors={story_distractors!r} must be counts in "
                     f"0..{N_CHOICES - 1}, e.g. (0, 1)")
  rng = random.Random(f"comprehension/{split}/{seed}")
  positions = _positions(n, rng)
  quota = {c: n // 3 + (k < n % 3) for k, c in enumerate(("place", "person", "object"))}
  items: list[ChoiceItem] = []
  seen: set[str] = set()
  while len(items) < n:
    story, questions, mentioned = _story(rng)
    from_story = story_distractors[len(items) % len(story_distractors)]
    questions = [q for q in questions if quota[q[2]] > 0 and len(mentioned[q[2]]) > from_story]
    if not questions or story in seen or zlib.crc32(story.encode()) % 2 != SPLITS.index(split):
      continue
    seen.add(story)
    question, answer, category = rng.choice(questions)
    quota[category] -= 1
    phrases = lambda names: [_phrase(x, category) for x in names if x != answer]
    unseen = [x for x in _POOLS[category] if x not in mentioned[category]]
    others = (rng.sample(phrases(mentioned[category]), from_story)
              + rng.sample(phrases(unseen), N_CHOICES - 1 - from_story))
    rng.shuffle(others)
    index = positions[len(items)]
    items.append(ChoiceItem(story, question, (*others[:index], _phrase(answer, category),
                                              *others[index:]), index, len(seen) - 1))
  return items


# --- the novels: chapters, paragraphs, sentences ----------------------------------------------

_CHAPTER = re.compile(r"chapter\s+[0-9ivxlc]+\.?", re.IGNORECASE)
_ABBREVIATION = re.compile(r"\b(?:Mr|Mrs|Dr|St|Col)\.$")


@lru_cache(maxsize=len(NOVELS))
def _chapters(novel: str) -> tuple[tuple[str, ...], ...]:
  """The novel's chapters as whitespace-normalized paragraphs (headings dropped)."""
  chapters: list[list[str]] = []
  current: list[str] | None = None
  for block in re.split(r"\n\s*\n", load_text(novel)):
    para = " ".join(block.split())
    if _CHAPTER.fullmatch(para):
      current = []
      chapters.append(current)
    elif not re.search("[a-z]", para):
      current = None  # a heading other than a chapter's: VOLUME II, FINIS, ...
    elif current is not None and para:
      current.append(para)
  return tuple(tuple(ch) for ch in chapters if ch)


def chapter_text(novel: str, index: int) -> str:
  """Chapter `index` (0-based, headings dropped) of a novel as one whitespace-normalized text."""
  chapters = _chapters(novel)
  if not 0 <= index < len(chapters):
    raise InputError(f"index={index}: {novel} has chapters 0..{len(chapters) - 1}")
  return " ".join(_chapters(novel)[index])


def _sentences(paragraph: str) -> list[str]:
  pieces = re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph)
  merged: list[str] = []
  for piece in pieces:
    if merged and _ABBREVIATION.search(merged[-1]):
      merged[-1] += " " + piece
    else:
      merged.append(piece)
  return merged


# --- cloze: LAMBADA-like last words ---------------------------------------------------------

_STOPWORDS = frozenset("""
about above after again against also among another because been before being below between
both came come could does doing done down during each either ever every from have having
here herself himself into itself just last less made make many more most much must myself
never next nothing once only other ought ours over same said says shall should since some
still such than that their theirs them themselves then there these they this those though
through thus till under until upon very were what when where whether which while whom whose
will with within without would your yours yourself
""".split())
_CLAUSE_FINAL = re.compile(r"([A-Za-z]{4,})[.!?,;:][\"']?")
_SENTENCE_END = re.compile(r"[.!?][\"')]*$")


@lru_cache(maxsize=32)
def _cloze_candidates(
    novel: str, lo: int, hi: int) -> tuple[tuple[int, int, tuple[int, ...]], ...]:
  """(chapter, target's char offset, allowed context starts as char offsets) per candidate."""
  out = []
  for c, paragraphs in enumerate(_chapters(novel)):
    text = "\n".join(paragraphs)
    tokens = list(re.finditer(r"\S+", text))
    words = [re.findall("[A-Za-z]+", t.group()) for t in tokens]
    starts = [j for j, t in enumerate(tokens) if j == 0 or text[t.start() - 1] == "\n"
              or _SENTENCE_END.search(tokens[j - 1].group())]
    for i, tok in enumerate(tokens):
      final = _CLAUSE_FINAL.fullmatch(tok.group())
      if i < lo or not final or final.group(1).lower() in _STOPWORDS:
        continue
      target = final.group(1)
      if text[tok.start() - 1] != " " or words[i - 1][-1:] == [target]:
        continue
      last = next((j for j in range(i - 1, max(i - hi, 0) - 1, -1) if target in words[j]), -1)
      allowed = tuple(tokens[s].start() for s in starts if i - hi <= s <= min(i - lo, last))
      if allowed:
        out.append((c, tok.start(), allowed))
  return tuple(out)


def cloze_items(
    novel: str, n: int = 200, seed: int = 0, context_words: tuple[int, int] = (60, 120),
) -> list[ClozeItem]:
  """Passages of a novel ending right before a word that occurs earlier in them.

  The target is alphabetic, >= 4 letters, not a stopword, and followed in the novel by a
  punctuation mark (it ends a clause); the context starts at a sentence start and holds
  context_words[0]..context_words[1] words; cluster = chapter index.
  """
  _check_count(n=n)
  lo, hi = context_words
  if not 1 <= lo <= hi:
    raise InputError(f"context_words={context_words} must be (lo, hi) with 1 <= lo <= hi")
  candidates = _cloze_candidates(novel, lo, hi)
  if len(candidates) < n:
    raise InputError(f"{novel} has {len(candidates)} cloze passages, fewer than n={n}")
  rng = random.Random(f"cloze/{novel}/{seed}")
  items = []
  for c, at, starts in sorted(rng.sample(candidates, n)):
    text = "\n".join(_chapters(novel)[c])
    target = _CLAUSE_FINAL.match(text, at).group(1)
    items.append(ClozeItem(text[rng.choice(starts):at - 1], " " + target, c))
  return items


# --- key-value recall: MQAR-like with natural words -----------------------------------------

_KV_KEYS = (
    "garden", "cellar", "kitchen", "library", "attic", "stable", "chapel", "orchard",
    "harbour", "tower", "bakery", "studio", "workshop", "cottage", "meadow", "bridge",
    "castle", "market", "station", "theatre", "office", "museum", "palace", "island")
_KV_VALUES = (
    "copper", "silver", "marble", "velvet", "crimson", "amber", "ivory", "purple", "orange",
    "yellow", "scarlet", "cotton", "granite", "violet", "bronze", "emerald", "olive", "maroon",
    "indigo", "walnut", "pewter", "canvas", "coral", "saffron")
_FILLER_NOVEL = "prideprejudice"
_WHOLE_SENTENCE = re.compile(r"[A-Z](?!.*(?:--|\.\.)).*[a-z][.!?]")


@lru_cache(maxsize=1)
def _filler_sentences() -> tuple[str, ...]:
  """Whole sentences of 8-30 words from the novel's narrative (no quotes), free of kv words."""
  banned = set(_KV_KEYS) | set(_KV_VALUES) | {"key"}
  return tuple(
      s for ch in _chapters(_FILLER_NOVEL) for para in ch if not re.search("[\"'_*]", para)
      for s in _sentences(para) if 8 <= len(s.split()) <= 30 and _WHOLE_SENTENCE.fullmatch(s)
      and not banned & {w.lower() for w in re.findall("[A-Za-z]+", s)})


def kv_recall_items(n_pairs: int, distance: int, n: int = 50, seed: int = 0) -> list[ChoiceItem]:
  """n_pairs "The key for the <key> is <value>." sentences, `distance` filler sentences, a query.

  Distractors are other values from the context, topped up from the word list when
  n_pairs < 4; cluster = item index.
  """
  _check_count(n=n, n_pairs=n_pairs)
  if n_pairs > len(_KV_KEYS):
    raise InputError(f"n_pairs={n_pairs} must be <= {len(_KV_KEYS)}")
  fillers = _filler_sentences()
  if not 0 <= distance <= len(fillers):
    raise InputError(f"distance={distance} must be in 0..{len(fillers)}")
  rng = random.Random(f"kv/{n_pairs}/{distance}/{seed}")
  items = []
  for k, index in enumerate(_positions(n, rng)):
    keys = rng.sample(_KV_KEYS, n_pairs)
    values = rng.sample(_KV_VALUES, len(_KV_VALUES))
    pairs = " ".join(f"The key for the {key} is {v}." for key, v in zip(keys, values))
    start = rng.randrange(len(fillers) - distance + 1)
    context = "\n\n".join([pairs] + [" ".join(fillers[start:start + distance])] * bool(distance))
    q = rng.randrange(n_pairs)
    others = [f" {v}" for v in values[:max(n_pairs, N_CHOICES)] if v != values[q]]
    choices = _choices(f" {values[q]}", others, index, rng)
    items.append(ChoiceItem(context, f"What is the key for the {keys[q]}?", choices, index, k))
  return items


def kv_recall_grid(
    pairs: tuple[int, ...] = (2, 4, 8, 16), distances: tuple[int, ...] = (0, 8, 32),
    n: int = 50, seed: int = 0,
) -> dict[tuple[int, int], list[ChoiceItem]]:
  """kv_recall_items for every (n_pairs, distance) in pairs x distances."""
  return {(p, d): kv_recall_items(p, d, n, seed) for p, d in itertools.product(pairs, distances)}


# --- fact recall after a long continuation --------------------------------------------------

_COLOURS = ("blue", "red", "green", "white", "black", "yellow")
_FACT_OBJECTS = ("box", "key", "letter", "ring", "book", "coat", "clock", "vase")
_FACT_PLACES = ("attic", "cellar", "garden", "kitchen", "library", "stable", "chapel", "study")
_OPENINGS = (
    "The rain had not stopped for three days when the stranger arrived at the inn.",
    "Every summer the family left the city for the old house by the lake.",
    "Nobody in the village could remember who had built the bridge over the river.",
    "On the morning of her tenth birthday, Alice found a letter under her door.",
    "The ship left the harbour at dawn, and by noon the coast had disappeared.",
    "Peter had worked in the bakery for twenty years, and he knew every customer by name.",
    "The old clockmaker lived alone at the end of a narrow street.",
    "It was the coldest winter anyone in the town had ever seen.",
    "When the train stopped in the middle of the forest, the passengers looked at each other.",
    "The new teacher arrived at the school on a bright Monday morning.",
)


def fact_recall_items(n: int = 40, seed: int = 0) -> list[FactItem]:
  """A fact ("Remember this: the blue box is in the attic.") before a story opening.

  The question, asked after the generated continuation, is where the object is or what
  colour it is; every item has a different (colour, object, place).
  """
  _check_count(n=n)
  facts = list(itertools.product(_COLOURS, _FACT_OBJECTS, _FACT_PLACES))
  if n > len(facts):
    raise InputError(f"n={n} must be <= {len(facts)}")
  rng = random.Random(f"fact/{seed}")
  items = []
  for (colour, obj, place), index in zip(rng.sample(facts, n), _positions(n, rng)):
    fact = f"Remember this: the {colour} {obj} is in the {place}."
    prompt = f"{fact}\n\n{rng.choice(_OPENINGS)}"
    if rng.random() < 0.5:
      question, right = f"Where is the {colour} {obj}?", f" the {place}"
      others = [f" the {x}" for x in _FACT_PLACES if x != place]
    else:
      question, right = f"What colour is the {obj} in the {place}?", f" {colour}"
      others = [f" {x}" for x in _COLOURS if x != colour]
    items.append(FactItem(fact, prompt, question, _choices(right, others, index, rng), index))
  return items


# --- topic switch: passage A, then passage B ------------------------------------------------

_TOPICS = {
    "cooking": (
        "Chop the onions finely and fry them in butter until they are soft and golden.",
        "Add the garlic, stir for a minute, and then pour in the tomatoes.",
        "Let the sauce simmer gently for twenty minutes, stirring now and then.",
        "Season the soup with salt, pepper and a handful of fresh parsley.",
        "Knead the dough for ten minutes until it is smooth and elastic.",
        "Bake the bread in a hot oven until the crust is brown and sounds hollow.",
        "Whisk the eggs with sugar and flour to make a light batter.",
        "Serve the stew hot with rice and a spoonful of yoghurt.",
    ),
    "astronomy": (
        "The planets orbit the Sun on nearly circular paths in the same plane.",
        "Jupiter is the largest planet, and its great red spot is a storm older than telescopes.",
        "Light from the nearest star takes more than four years to reach the Earth.",
        "A galaxy holds billions of stars bound together by gravity.",
        "When a massive star runs out of fuel, it can collapse into a black hole.",
        "Astronomers measure the distance to stars by their parallax over a year.",
        "The Moon shows phases because we see different parts of its sunlit side.",
        "Comets are balls of ice and dust that grow bright tails near the Sun.",
    ),
    "sailing": (
        "The crew hoisted the mainsail and the boat heeled over in the wind.",
        "To tack, the helmsman turns the bow through the wind to the other side.",
        "A sailor reads the clouds and the water to judge the coming weather.",
        "The anchor dragged across the sandy bottom before it finally held.",
        "Reefing the sail makes it smaller so the boat can handle a strong gale.",
        "The navigator plotted a course on the chart with a compass and ruler.",
        "Waves broke over the deck as the yacht rounded the rocky headland.",
        "At the harbour the sailors coiled the ropes and tied the boat to the pier.",
    ),
    "chess": (
        "White opened with the king's pawn, and Black answered with the Sicilian defence.",
        "A knight moves in the shape of an L and can jump over other pieces.",
        "Castling moves the king to safety and brings a rook into the game.",
        "The bishop pair is strong in open positions with few pawns.",
        "She sacrificed her queen to force checkmate in three moves.",
        "In the endgame the king becomes an active and powerful piece.",
        "A pawn that reaches the last rank is promoted, usually to a queen.",
        "The grandmaster spent forty minutes on a single move in the middlegame.",
    ),
    "computers": (
        "The processor fetches instructions from memory and executes them one by one.",
        "A compiler translates source code into machine code the computer can run.",
        "The program crashed because it tried to read memory it had already freed.",
        "Data is stored on the disk in files, and the operating system keeps track of them.",
        "A network sends packets of bits between computers using agreed protocols.",
        "The programmer fixed the bug by adding a check for an empty list.",
        "Modern chips contain billions of transistors etched in silicon.",
        "A database answers queries by searching its tables with indexes.",
    ),
    "medicine": (
        "The doctor listened to the patient's heart and lungs with a stethoscope.",
        "Antibiotics kill bacteria but do nothing against viruses.",
        "The nurse measured his blood pressure and took a sample of blood.",
        "A vaccine trains the immune system to recognise a germ before an infection.",
        "The surgeon washed her hands carefully before the operation began.",
        "Fever is the body's way of fighting off an infection.",
        "The broken bone was set and held in place with a plaster cast.",
        "The pharmacist explained how many tablets to take each day.",
    ),
}
_TOPIC_SENTENCES = 5


def topic_switch_prompts(n: int = 8, seed: int = 0) -> list[TopicSwitch]:
  """Hand-written passages on two different topics; every item has a different ordered pair."""
  _check_count(n=n)
  pairs = list(itertools.permutations(_TOPICS, 2))
  if n > len(pairs):
    raise InputError(f"n={n} must be <= {len(pairs)}")
  rng = random.Random(f"topic/{seed}")
  items = []
  for a, b in rng.sample(pairs, n):
    text_a = " ".join(rng.sample(_TOPICS[a], _TOPIC_SENTENCES))
    text_b = "\n\n" + " ".join(rng.sample(_TOPICS[b], _TOPIC_SENTENCES))
    items.append(TopicSwitch(a, b, text_a, text_b))
  return items
