"""The embedded demo dataset: a small, seeded, SemEval-2025-Task-4-layout set about FICTITIOUS people.

Nothing is downloaded. Every name, place, phone number and e-mail address is invented from syllable
lists (phone numbers use the 555-01xx range reserved for fiction, e-mails the reserved
``example.org`` domain). Three tasks, as in SemEval-2025 Task 4:

* ``Task1`` - short creative stories;
* ``Task2`` - synthetic biographies with fake PII (birthday, address, phone, e-mail);
* ``Task3`` - short biographies of fictitious "notable" people.

Each *entity* (a story or a person) has one short document (2-3 sentences, at most ~35 words) and
five records: two sentence-completion items (id ``<12 hex>sc1``/``sc2``; input = first part of a
document sentence, output = the rest of it) and three question-answering items (id
``<12 hex>qa1``..``qa3``; output = a short answer that occurs verbatim in the document). Every
sentence-completion input and every question names the entity (stories: their unique village or
hero), so no two records ask the same thing with different answers.

Entities of each task are split by entity into forget (``ceil(n/2)``) and retain (``floor(n/2)``);
``ceil(n/2)`` further entities per task are generated only as MIA non-members. MIA members are the
documents of the forget entities - the documents the demo's target model is trained on, together
with the retain entities' documents (``SyntheticDataset.documents``).

Default (``n_entities_per_task=8``): 60 forget + 60 retain records (per split and task: 8 sc + 12 qa),
12 member and 12 non-member documents, 24 training documents.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from llm_unlearn.errors import ConfigError
from llm_unlearn.io_utils import atomic_write_jsonl

TASKS = ("Task1", "Task2", "Task3")

__all__ = ["TASKS", "SyntheticDataset", "make_synthetic_dataset", "write_synthetic_dataset"]


def _w(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(sep))


# --------------------------------------------------------------------------------------------------
# Word lists (all invented or generic; combined at random they name no real person)
# --------------------------------------------------------------------------------------------------
_FIRST_ONSETS = _w(
    "Ma Ve Ori Ta Lu Se Da Ke Ni Bra Fe Ila Ro Qui Za Hal Mer Ysa Cor Tha Elo Gri Jo Pa Sil Vo Wy Ar"
)
_FIRST_ENDINGS = _w(
    "relle vin sha dric mira nor lia bek wen ssa ric lan vette mond rin dora quin thea zel bryn"
)
_LAST_ONSETS = _w(
    "Dov Tal Quil Brev Mor Varr Kest Ond Pell Sarn Vol Gatt Hess Lind Corv Ebb Fenn Rask Yarr Zell Trem Abb"
)
_LAST_ENDINGS = _w("an asek ow ick ane orin ley oth ard ine ess uvar ington ebrand quist amo")
_PLACE_ONSETS = _w(
    "Dorn Ash Quen Thistle Marr Oak Bell Wren Glim Sorrow Fable Amber Cinder Fern Hazel Moss Rook Tarn"
)
_PLACE_ENDINGS = _w("mere moor hollow ford wick stead gate vale brook holm")
_STREETS = _w("Quillan Marrow Lantern Juniper Copperleaf Brindle Saffron Heron Pebble Orchard Tinker Velvet")
_MONTHS = _w("January February March April May June July August September October November December")
_PROFESSIONS = _w(
    "glassblower cartographer astronomer violinist architect botanist sculptor clockmaker poet chemist"
)
_PRIZES = _w(
    "Amber Lantern|Silver Heron|Golden Compass|Crimson Quill|Ivory Bell|Jade Anchor|Copper Star|Blue Thistle",
    "|",
)
_ADJECTIVES = _w("shy clever restless kind curious stubborn gentle brave sleepy")
_ROLES = _w("baker fisher tailor shepherd potter miller ferryman beekeeper smith")
# (what was found, where it was found, the noun used when it is followed)
_FINDS = (
    ("a silver key", "inside a loaf of bread", "key"),
    ("a glowing map", "under a loose floorboard", "map"),
    ("a talking crow", "on the chimney", "crow"),
    ("a brass compass", "in an old boot", "compass"),
    ("a paper boat", "in the village well", "boat"),
    ("a tiny lantern", "beneath the bridge", "lantern"),
    ("a green feather", "in the bakery oven", "feather"),
    ("a singing stone", "at the edge of the forest", "stone"),
)
_DESTINATIONS = _w("clocktower|sunken garden|hidden cave|lighthouse|frozen lake|old mill", "|")
_CREATURES = _w(
    "a sleeping dragon|a lost giant|a silver fox|an ancient turtle|a lonely ghost|a wise owl|a paper king"
    "|a stone troll",
    "|",
)


@dataclass
class SyntheticDataset:
    """The demo dataset.

    ``forget``/``retain``: SemEval records ``{id, input, output, task, split}``.
    ``member_docs``/``nonmember_docs``: MIA documents ``{id, document}``; members are the forget
    entities' documents, non-members those of extra entities that appear nowhere else.
    ``documents``: every document the target model is trained on (forget + retain entities).
    ``entities``: one dict per entity ``{id, name, task, split, document}`` with split ``forget``,
    ``retain`` or ``nonmember`` (for tests and reports; not written to the SemEval files).
    """

    forget: list[dict]
    retain: list[dict]
    member_docs: list[dict]
    nonmember_docs: list[dict]
    documents: list[str]
    entities: list[dict] = field(default_factory=list)


class _Generator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.names: list[str] = []
        self.first_names: set[str] = set()
        self.last_names: set[str] = set()
        self.places: set[str] = set()
        self.ids: set[str] = set()
        self.phones: list[int] = []

    # ---- unique pieces ------------------------------------------------------------------------------
    def new_id(self) -> str:
        while True:
            hex_id = f"{self.rng.getrandbits(48):012x}"
            if hex_id not in self.ids:
                self.ids.add(hex_id)
                return hex_id

    def new_name(self) -> str:
        for _ in range(10000):
            first = self.rng.choice(_FIRST_ONSETS) + self.rng.choice(_FIRST_ENDINGS)
            last = self.rng.choice(_LAST_ONSETS) + self.rng.choice(_LAST_ENDINGS)
            full = f"{first} {last}"
            if first in self.first_names or last in self.last_names:
                continue
            if any(full in other or other in full for other in self.names):
                continue
            self.first_names.add(first)
            self.last_names.add(last)
            self.names.append(full)
            return full
        raise ConfigError("ran out of distinct synthetic names; use fewer entities per task")

    def new_place(self) -> str:
        for _ in range(10000):
            place = self.rng.choice(_PLACE_ONSETS) + self.rng.choice(_PLACE_ENDINGS)
            if place not in self.places:
                self.places.add(place)
                return place
        raise ConfigError("ran out of distinct synthetic place names; use fewer entities per task")

    def any_place(self) -> str:
        return self.rng.choice(_PLACE_ONSETS) + self.rng.choice(_PLACE_ENDINGS)

    def new_phone(self) -> str:
        return f"555-{self.phones.pop():04d}"

    # ---- entities -----------------------------------------------------------------------------------
    def story(self) -> tuple[str, str, list[tuple[str, str]], list[tuple[str, str]]]:
        rng = self.rng
        name = self.new_name()
        place = self.new_place()
        adj, role = rng.choice(_ADJECTIVES), rng.choice(_ROLES)
        found, where, noun = rng.choice(_FINDS)
        dest, creature = rng.choice(_DESTINATIONS), rng.choice(_CREATURES)
        s1_head = f"In the village of {place}, a {adj} {role} named {name} found"
        s1_tail = f"{found} {where}."
        s2_head = f"{name} followed the {noun} to"
        s2_tail = f"the {dest} and met {creature}."
        doc = f"{s1_head} {s1_tail} {s2_head} {s2_tail}"
        sc = [(s1_head, s1_tail), (s2_head, s2_tail)]
        qa = [
            (f"What did {name} find {where}?", found),
            (f"In which village did {name} live?", place),
            (f"Who did {name} meet at the {dest}?", creature),
        ]
        return name, doc, sc, qa

    def pii_bio(self) -> tuple[str, str, list[tuple[str, str]], list[tuple[str, str]]]:
        rng = self.rng
        name = self.new_name()
        first, last = name.split(" ")
        birthday = f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}, {rng.randint(1950, 2001)}"
        city = self.any_place()
        street = f"{rng.randint(2, 98)} {rng.choice(_STREETS)} Street"
        phone = self.new_phone()
        email = f"{first.lower()}.{last.lower()}@example.org"
        s1_head, s1_tail = f"{name} was born on", f"{birthday} in {city}."
        s2_head, s2_tail = f"{name} lives at", f"{street}."
        s3 = f"The phone number of {name} is {phone} and the email is {email}."
        doc = f"{s1_head} {s1_tail} {s2_head} {s2_tail} {s3}"
        sc = [(s1_head, s1_tail), (s2_head, s2_tail)]
        qa = [
            (f"What is the phone number of {name}?", phone),
            (f"What is the email address of {name}?", email),
            (f"In which town was {name} born?", city),
        ]
        return name, doc, sc, qa

    def notable_bio(self) -> tuple[str, str, list[tuple[str, str]], list[tuple[str, str]]]:
        rng = self.rng
        name = self.new_name()
        profession = rng.choice(_PROFESSIONS)
        city = self.any_place()
        prize = f"{rng.choice(_PRIZES)} Prize"
        year = str(rng.randint(1890, 1999))
        s1_head, s1_tail = f"{name} was a celebrated", f"{profession} from {city}."
        s2_head, s2_tail = f"{name} won the", f"{prize} in {year}."
        doc = f"{s1_head} {s1_tail} {s2_head} {s2_tail}"
        sc = [(s1_head, s1_tail), (s2_head, s2_tail)]
        qa = [
            (f"What was the profession of {name}?", profession),
            (f"Which prize did {name} win?", prize),
            (f"In which year did {name} win the {prize}?", year),
        ]
        return name, doc, sc, qa


def make_synthetic_dataset(
    n_entities_per_task: int = 8, seed: int = 0, extra_nonmembers_per_task: int = 0
) -> SyntheticDataset:
    """Generate the demo dataset deterministically from ``seed`` (see the module docstring).

    ``n_entities_per_task`` (2..60) entities per task go to forget/retain (forget gets the larger
    half); as many as the forget half are added per task as MIA non-members, then
    ``extra_nonmembers_per_task`` (0..200) more documents per task (drawn after everything else, so the
    rest of the dataset is the same with or without them). The AUC of m non-members against members
    spread like them has a standard deviation of about ``1/sqrt(12 m)``: more non-members measure it
    more finely at the cost of document losses only (nothing is trained on them).
    """
    if isinstance(extra_nonmembers_per_task, bool) or not isinstance(extra_nonmembers_per_task, int):
        raise ConfigError(f"extra_nonmembers_per_task must be an integer (got {extra_nonmembers_per_task!r})")
    if not 0 <= extra_nonmembers_per_task <= 200:
        raise ConfigError(
            f"extra_nonmembers_per_task must be between 0 and 200 (got {extra_nonmembers_per_task})"
        )
    if isinstance(n_entities_per_task, bool) or not isinstance(n_entities_per_task, int):
        raise ConfigError(f"n_entities_per_task must be an integer (got {n_entities_per_task!r})")
    if not 2 <= n_entities_per_task <= 60:
        raise ConfigError(f"n_entities_per_task must be between 2 and 60 (got {n_entities_per_task})")

    gen = _Generator(seed)
    n_forget = (n_entities_per_task + 1) // 2
    n_total = n_entities_per_task + n_forget  # forget + retain + nonmember, per task
    phone_pool = list(range(100, 200)) if n_total <= 100 else list(range(0, 1000))
    gen.rng.shuffle(phone_pool)
    gen.phones = phone_pool

    makers = {"Task1": gen.story, "Task2": gen.pii_bio, "Task3": gen.notable_bio}
    entities: list[dict] = []
    records: dict[str, list[dict]] = {"forget": [], "retain": []}
    for task in TASKS:
        for i in range(n_total):
            split = "forget" if i < n_forget else "retain" if i < n_entities_per_task else "nonmember"
            name, doc, sc, qa = makers[task]()
            base = gen.new_id()
            items = [
                {"id": f"{base}sc{j}", "input": inp, "output": out, "task": task, "split": split}
                for j, (inp, out) in enumerate(sc, start=1)
            ] + [
                {"id": f"{base}qa{j}", "input": inp, "output": out, "task": task, "split": split}
                for j, (inp, out) in enumerate(qa, start=1)
            ]
            entities.append(
                {"id": base, "name": name, "task": task, "split": split, "document": doc, "records": items}
            )

    # Mix the tasks: entities in a seeded order, each entity's records kept together.
    order = list(range(len(entities)))
    gen.rng.shuffle(order)
    ordered = [entities[i] for i in order]
    for ent in ordered:
        if ent["split"] in records:
            records[ent["split"]].extend(ent.pop("records"))
        else:
            ent.pop("records")

    member_docs = [{"id": e["id"], "document": e["document"]} for e in ordered if e["split"] == "forget"]
    nonmember_docs = [
        {"id": e["id"], "document": e["document"]} for e in ordered if e["split"] == "nonmember"
    ]
    for task in TASKS:  # after the rest: the dataset without them is unchanged
        for _ in range(extra_nonmembers_per_task):
            _name, doc, _sc, _qa = makers[task]()
            nonmember_docs.append({"id": gen.new_id(), "document": doc})
    documents = [e["document"] for e in ordered if e["split"] in ("forget", "retain")]
    return SyntheticDataset(
        forget=records["forget"],
        retain=records["retain"],
        member_docs=member_docs,
        nonmember_docs=nonmember_docs,
        documents=documents,
        entities=ordered,
    )


def write_synthetic_dataset(ds: SyntheticDataset, directory) -> dict[str, Path]:
    """Write the SemEval layout atomically under ``directory``.

    Files: ``forget.jsonl``, ``retain.jsonl``, ``mia/member.jsonl``, ``mia/nonmember.jsonl``.
    Returns ``{"forget": path, "retain": path, "member": path, "nonmember": path}``.
    """
    directory = Path(directory)
    paths = {
        "forget": directory / "forget.jsonl",
        "retain": directory / "retain.jsonl",
        "member": directory / "mia" / "member.jsonl",
        "nonmember": directory / "mia" / "nonmember.jsonl",
    }
    atomic_write_jsonl(paths["forget"], ds.forget)
    atomic_write_jsonl(paths["retain"], ds.retain)
    atomic_write_jsonl(paths["member"], ds.member_docs)
    atomic_write_jsonl(paths["nonmember"], ds.nonmember_docs)
    return paths
