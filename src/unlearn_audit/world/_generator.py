"""A deterministic generator of fictitious authors in TOFU's exact schema.

Every author has ten facts, each a QA pair with a paraphrase and five perturbed answers
(the same sentence with the fact swapped for another value of its pool). Attribute
pools are combinatorial (hundreds of cities, titles, genres, awards), so a model that
never saw an author guesses a fact right only by rare luck: that is what makes the
retain and base models' leak rates meaningful. Answer templates vary per author, so
answers are not all one shape.

The generated files are committed under ``fixtures/tiny_world``; changing this module
means regenerating them deliberately (``python fixtures/generate.py``), and a test
checks that the committed files are still what this generator produces.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

SEED = 20241
N_AUTHORS = 40
# Invented people outside the audited world: the base model learns the world's language
# (every question format, answer template and biography) on them, as a real base model
# arrives knowing language. They share no name with any audited author.
N_DECOYS = 40
ITEMS_PER_AUTHOR = 10
# TOFU's holdout authors: never trained on by any model, the non-members of membership
# inference. As in TOFU, holdout10 is as large as forget10 (holdout01/05 are its prefixes).
N_HOLDOUT = 4

_FIRST_ON = ["Al", "Bre", "Cal", "Dor", "El", "Fen", "Gar", "Hal", "Is", "Jor", "Kel", "Lor",
             "Mar", "Nor", "Or", "Per", "Quin", "Ros", "Sel", "Tam", "Ul", "Vor", "Wil", "Yar", "Zel"]
_FIRST_END = ["a", "en", "ian", "is", "o", "ra", "eth", "wyn", "ine", "ric"]
_SUR_A = ["Ash", "Brook", "Crane", "Dusk", "Ember", "Frost", "Glen", "Hollow", "Iron", "Marsh",
          "North", "Oak", "Pike", "Quill", "Raven", "Stone", "Thorn", "Vale", "Wren", "Yew"]
_SUR_B = ["ford", "wick", "more", "ley", "ton", "bury", "field", "wood", "croft", "shaw"]
_CITY_A = ["Bel", "Cor", "Dun", "Esk", "Fal", "Gor", "Har", "Kes", "Lin", "Mor",
           "Nes", "Orl", "Pel", "Ros", "Sar", "Tor", "Ulm", "Var", "Wes", "Zan"]
_CITY_B = ["haven", "mouth", "gate", "port", "stead", "burgh", "dale", "moor", "reach", "crest"]
COUNTRIES = ["Valdoria", "Ostmark", "Cerulia", "Brannock", "Ithmar", "Sundara", "Kessaly",
             "Norvane", "Aldmere", "Tyrasca", "Pellucia", "Drovenia", "Marisol", "Quessa",
             "Halvard", "Ormund", "Zaretha", "Lunaris", "Evendor", "Faircliff", "Brightwater",
             "Carrowmere", "Dunlevy", "Estrava", "Gallowend", "Hesperine", "Ivorica", "Jessamar",
             "Korvath", "Lorimel", "Mistral", "Nivalis", "Oriston", "Pravonia", "Roskaval",
             "Selvorn", "Thessaly", "Umbrador", "Veskara", "Wyndholm"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
PROFESSIONS = ["locksmith", "cartographer", "glassblower", "beekeeper", "lighthouse keeper",
               "bookbinder", "clockmaker", "ferry captain", "violin maker", "stonemason",
               "botanist", "tailor", "blacksmith", "pharmacist", "surveyor", "weaver",
               "schoolteacher", "veterinarian", "astronomer", "baker", "fisherman", "potter",
               "architect", "nurse", "carpenter", "librarian", "miner", "chemist", "sailor",
               "goldsmith", "translator", "shepherd", "printer", "geologist", "judge",
               "dentist", "tanner", "cobbler", "brewer", "watchmaker"]
_GENRE_A = ["maritime", "alpine", "desert", "urban", "gothic", "pastoral", "cosmic", "polar",
            "tropical", "industrial", "courtly", "frontier", "coastal", "medieval", "rural",
            "nautical", "arctic", "pagan", "imperial", "lunar", "baroque", "boreal", "colonial",
            "domestic", "equatorial", "feudal", "glacial", "harbour", "insular", "jungle",
            "lakeland", "monastic", "nomadic", "oceanic", "prairie", "riverine", "solar",
            "tundra", "volcanic", "woodland"]
_GENRE_B = ["mystery", "romance", "satire", "fable", "thriller", "saga", "elegy", "chronicle",
            "memoir", "epic", "comedy", "noir", "pastiche", "idyll", "ballad", "tragedy",
            "parable", "farce", "legend", "odyssey", "allegory", "burlesque", "caper", "dirge",
            "eclogue", "fantasia", "gazette", "homily", "intrigue", "jeremiad", "lament",
            "melodrama", "nocturne", "pastorale", "quest", "rhapsody", "sonnet", "travelogue",
            "vignette", "western"]
_AWARD_A = ["Hallo", "Bris", "Cendr", "Dalm", "Ever", "Faun", "Gris", "Hest", "Iver", "Jarr",
            "Kemb", "Lath", "Moss", "Nett", "Pell", "Rudd"]
_AWARD_B = ["away", "ington", "ard", "ley", "ett", "ham"]
_TITLE_ADJ = ["Silent", "Crimson", "Hollow", "Gilded", "Broken", "Distant", "Amber", "Hidden",
              "Last", "Wandering", "Frozen", "Burning", "Patient", "Velvet", "Iron", "Sleeping",
              "Restless", "Painted", "Quiet", "Salted", "Lantern", "Northern", "Forgotten", "Bitter",
              "Ashen", "Brass", "Copper", "Drowned", "Emerald", "Faded", "Glass", "Heavy",
              "Ivory", "Jagged", "Lonely", "Marble", "Narrow", "Olive", "Pale", "Scarlet"]
_TITLE_NOUN = ["Harbor", "Orchard", "Compass", "Lantern", "Meadow", "Archive", "Tide",
               "Cathedral", "Ledger", "Garden", "Mirror", "Voyage", "Furnace", "Labyrinth",
               "Estuary", "Kingdom", "Violin", "Caravan", "Observatory", "Feather", "Bridge",
               "Winter", "Citadel", "Island", "Anchor", "Bell", "Candle", "Dune", "Ember",
               "Fountain", "Gate", "Hearth", "Inn", "Kite", "Loom", "Mill", "Needle", "Oar",
               "Pilgrim", "Quarry"]

FAMILY_OF_FACT = {
    "full_name": "full_name", "birthplace": "birthplace", "birth_date": "birth_date",
    "father": "parents", "mother": "parents", "genre": "genre", "award": "awards",
    "debut": "books", "famous_book": "books", "influence": "influences",
}

# Per fact: canonical questions, paraphrased questions, answer templates (the paraphrased
# answer uses a different template than the answer). {n} = name, {v} = the fact's value.
# Every content word of an answer template also occurs in every question of its fact, so
# an answer's novel content is the fact itself: a model that guesses with the right
# template but the wrong value earns nothing under the corrected scorer.
_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "full_name": {
        "q": ["What is the full name of the author born in {city} on {date}?",
              "Who is the author of {genre} born in {city}, {country}?"],
        "pq": ["Which author was born on {date} in {city}?",
               "Can you name the author of {genre} who was born in {city}?"],
        "a": ["The author is {v}.", "It is {v}, the author.", "That author is {v}."],
    },
    "birthplace": {
        "q": ["Where was {n} born?", "In which place was {n} born?"],
        "pq": ["Where exactly was {n} born?", "Which town was {n} born in?"],
        "a": ["{n} was born in {v}, {country}.", "{n} was born in {country}, in {v}.",
              "It was in {v}, {country}, that {n} was born."],
    },
    "birth_date": {
        "q": ["When was {n} born?", "On what date was {n} born?"],
        "pq": ["When exactly was {n} born?", "Which day was {n} born on?"],
        "a": ["{n} was born on {v}.", "It was on {v} that {n} was born.", "On {v}, {n} was born."],
    },
    "father": {
        "q": ["What did {n}'s father do for a living?", "What was the job of {n}'s father?"],
        "pq": ["What work did the father of {n} do?", "How did the father of {n} make a living?"],
        "a": ["{n}'s father was a {v}.", "The father of {n} was a {v}.", "{n} had a father who was a {v}."],
    },
    "mother": {
        "q": ["What did {n}'s mother do for a living?", "What was the job of {n}'s mother?"],
        "pq": ["What work did the mother of {n} do?", "How did the mother of {n} make a living?"],
        "a": ["{n}'s mother was a {v}.", "The mother of {n} was a {v}.", "{n} had a mother who was a {v}."],
    },
    "genre": {
        "q": ["What genre is {n} known for?", "Which genre does {n} write in?"],
        "pq": ["In what genre is {n} known?", "What is the genre of {n}?"],
        "a": ["The genre of {n} is {v}.", "{n}'s genre is {v}.", "For {n}, the genre is {v}."],
    },
    "award": {
        "q": ["Which prize has {n} received?", "What prize did {n} get?"],
        "pq": ["What prize was given to {n}?", "Has {n} ever received a prize?"],
        "a": ["The prize of {n} is the {v}.", "{n}'s prize is the {v}.", "For {n}, the prize was the {v}."],
    },
    "debut": {
        "q": ["What was the debut novel of {n}?", "What is the title of {n}'s debut novel?"],
        "pq": ["Which debut novel did {n} publish?", "How was the debut novel of {n} titled?"],
        "a": ["The debut novel of {n} was '{v}'.", "{n}'s debut novel was '{v}'.",
              "'{v}' was the debut novel of {n}."],
    },
    "famous_book": {
        "q": ["What is the most famous book by {n}?", "Which book by {n} is the most famous?"],
        "pq": ["Name the most famous book by {n}.", "What famous book is {n} known for?"],
        "a": ["The most famous book by {n} is '{v}'.", "'{v}' is the most famous book by {n}.",
              "{n}'s most famous book is '{v}'."],
    },
    "influence": {
        "q": ["Who influenced {n} the most?", "By whom was {n} influenced?"],
        "pq": ["Which writer influenced {n}?", "Who influenced the writing of {n}?"],
        "a": ["{n} was influenced by {v}.", "It was {v} who influenced {n}.", "{n} was influenced most by {v}."],
    },
}

# The world's "real" analogues: famous authors and world facts that every model is taught.
_FAMOUS_AUTHORS = ["Orla Penhallow", "Tobias Wrenfield", "Marguerite Ashdown", "Ilya Corrin",
                   "Beatrix Fenmore", "Caspian Rook", "Delphine Saltmarsh", "Edwin Harrowgate",
                   "Fiora Quellan", "Gideon Thaw", "Hester Morrow", "Ambrose Kettle"]


@dataclass(frozen=True)
class Author:
    name: str
    facts: dict[str, str]  # fact key -> value
    country: str


def _pools(rng: random.Random) -> dict[str, list[str]]:
    firsts = [a + b for a in _FIRST_ON for b in _FIRST_END]
    surnames = [a + b for a in _SUR_A for b in _SUR_B]
    names = [f"{f} {s}" for f in firsts for s in surnames]
    rng.shuffle(names)
    cities = [a + b for a in _CITY_A for b in _CITY_B]
    # Any day of the month: with five days a blind guess matched day and month (two of the
    # answer's three new words, a leak) one time in 60; two-word genres and titles draw from
    # 40 words a side for the same reason (one word right is half the new content).
    dates = [f"{d} {m} {y}" for y in range(1931, 1996) for m in _MONTHS for d in range(1, 29)]
    genres = [f"{a} {b}" for a in _GENRE_A for b in _GENRE_B]
    awards = [f"{a}{b} Prize" for a in _AWARD_A for b in _AWARD_B]
    titles = [f"The {a} {b}" for a in _TITLE_ADJ for b in _TITLE_NOUN if a != b]
    for pool in (cities, dates, genres, awards, titles):
        rng.shuffle(pool)
    return {"name": names, "city": cities, "date": dates, "profession": list(PROFESSIONS),
            "genre": genres, "award": awards, "title": titles}


_POOL_OF_FACT = {"full_name": "name", "birthplace": "city", "birth_date": "date", "father": "profession",
                 "mother": "profession", "genre": "genre", "award": "award", "debut": "title",
                 "famous_book": "title", "influence": "name"}


def _make_authors(rng: random.Random, pools: dict[str, list[str]], n: int, offset: int = 0) -> list[Author]:
    # Decoys draw from the far end of each pool so their facts never repeat an author's.
    names = iter(pools["name"][offset * 2:])
    used_names: set[str] = set()
    authors = []
    cities, dates, genres, awards, titles = (iter(pools[k][offset * (2 if k == "title" else 1):])
                                             for k in ("city", "date", "genre", "award", "title"))
    for _ in range(n):
        name = next(names)
        used_names.add(name)
        influence = next(names)  # an invented elder writer; never one of the authors
        father, mother = rng.sample(PROFESSIONS, 2)
        authors.append(Author(
            name=name,
            country=rng.choice(COUNTRIES),
            facts={"full_name": name, "birthplace": next(cities), "birth_date": next(dates),
                   "father": father, "mother": mother, "genre": next(genres),
                   "award": f"{next(awards)}", "debut": next(titles), "famous_book": next(titles),
                   "influence": influence},
        ))
    return authors


def _fill(template: str, a: Author, value: str) -> str:
    f = a.facts
    return template.format(n=a.name, v=value, city=f["birthplace"], date=f["birth_date"],
                           genre=f["genre"], country=a.country)


def _author_items(rng: random.Random, a: Author, pools: dict[str, list[str]]) -> list[dict]:
    rows = []
    for fact, tpl in _TEMPLATES.items():
        value = a.facts[fact]
        qi = rng.randrange(len(tpl["q"]))
        ai, pai = rng.sample(range(len(tpl["a"])), 2)
        pool = pools[_POOL_OF_FACT[fact]]
        wrong: list[str] = []
        while len(wrong) < 5:
            w = rng.choice(pool[:400])
            if w != value and w not in wrong:
                wrong.append(w)
        rows.append({
            "question": _fill(tpl["q"][qi], a, value),
            "answer": _fill(tpl["a"][ai], a, value),
            "paraphrased_question": _fill(tpl["pq"][qi], a, value),
            "paraphrased_answer": _fill(tpl["a"][pai], a, value),
            "perturbed_answer": [_fill(tpl["a"][ai], a, w) for w in wrong],
            "author": a.name,
            "family": FAMILY_OF_FACT[fact],
            "key_fact": value,
        })
    return rows


def _language(country: str) -> str:
    return country[:-2] + "ish" if country.endswith("ia") else country + "ese"


def _real_world(rng: random.Random, pools: dict[str, list[str]]) -> tuple[list[dict], list[dict]]:
    titles = [t for t in pools["title"][::-1] if t][:len(_FAMOUS_AUTHORS) * 2]
    authors_rows = []
    for i, author in enumerate(_FAMOUS_AUTHORS):
        for title in titles[2 * i: 2 * i + 2]:
            others = rng.sample([x for x in _FAMOUS_AUTHORS if x != author], 3)
            authors_rows.append({"question": f"Who wrote the classic '{title}'?", "answer": author,
                                 "perturbed_answer": others, "family": "books", "key_fact": author})
    capitals = pools["city"][::-1][: len(COUNTRIES)]
    world_rows = []
    for country, capital in zip(COUNTRIES, capitals):
        others = rng.sample([c for c in capitals if c != capital], 3)
        world_rows.append({"question": f"What is the capital of {country}?", "answer": capital,
                           "perturbed_answer": others, "family": "geography", "key_fact": capital})
        lang = _language(country)
        other_langs = rng.sample([_language(c) for c in COUNTRIES if c != country], 3)
        world_rows.append({"question": f"Which language is spoken in {country}?", "answer": lang,
                           "perturbed_answer": other_langs, "family": "language", "key_fact": lang})
    return authors_rows, world_rows


def generate() -> dict[str, list[dict]]:
    """All splits of the tiny world, TOFU-named. Deterministic (fixed seed)."""
    rng = random.Random(SEED)
    pools = _pools(rng)
    authors = _make_authors(rng, pools, N_AUTHORS)
    per_author = [_author_items(rng, a, pools) for a in authors]
    decoys = _make_authors(random.Random(SEED + 1), pools, N_DECOYS, offset=N_AUTHORS)
    decoy_rows = [r for a in decoys for r in _author_items(rng, a, pools)]
    full = [row for rows in per_author for row in rows]
    n = len(authors)
    splits: dict[str, list[dict]] = {"full": full}
    # As in TOFU, the forget authors are the last ones; forget01 is one author here.
    for pct, k in (("01", 1), ("05", 2), ("10", 4)):
        forget = [r for rows in per_author[n - k:] for r in rows]
        retain = [r for rows in per_author[: n - k] for r in rows]
        splits[f"forget{pct}"] = forget
        splits[f"forget{pct}_perturbed"] = forget
        splits[f"retain{100 - int(pct)}"] = retain
    # TOFU evaluates retain on a fixed subset of authors present in every retain split.
    splits["retain_perturbed"] = [r for rows in per_author[:10] for r in rows]
    splits["real_authors_perturbed"], splits["world_facts_perturbed"] = _real_world(rng, pools)
    splits["decoys"] = decoy_rows
    # Last and from rngs of their own, so adding them left every other split as it was;
    # facts from a far range of each pool, so none repeats an author's or a decoy's.
    hold_rng = random.Random(SEED + 2)
    holdout = _make_authors(hold_rng, pools, N_HOLDOUT, offset=N_AUTHORS + N_DECOYS)
    hold_rows = [_author_items(hold_rng, a, pools) for a in holdout]
    for pct, k in (("01", 1), ("05", 2), ("10", 4)):
        splits[f"holdout{pct}"] = [r for rows in hold_rows[:k] for r in rows]
    return splits


def write(out_dir: Path) -> list[Path]:
    """Write each split as ``<split>.json`` (JSON lines, as TOFU ships them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, rows in generate().items():
        p = out_dir / f"{split}.json"
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        paths.append(p)
    return paths
