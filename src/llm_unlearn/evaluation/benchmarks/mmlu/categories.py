"""The standard MMLU taxonomy (Hendrycks et al. 2021): 57 subjects -> subcategory -> category.

Used for ``subcat_acc`` and ``cat_acc`` in ``metrics.json``, with the same names as Open-Instruct's
MMLU evaluation.
"""

from __future__ import annotations

__all__ = ["SUBJECT_SUBCATEGORIES", "CATEGORIES", "SUBJECTS", "subject_categories"]

_STEM = "STEM"
_HUM = "humanities"
_SOC = "social sciences"
_OTHER = "other (business, health, misc.)"

#: category -> its subcategories (in the standard order).
CATEGORIES: dict[str, list[str]] = {
    _STEM: ["physics", "chemistry", "biology", "computer science", "math", "engineering"],
    _HUM: ["history", "philosophy", "law"],
    _SOC: ["politics", "culture", "economics", "geography", "psychology"],
    _OTHER: ["other", "business", "health"],
}

# subcategory -> subjects; flattened below into subject -> [subcategory]
_BY_SUBCATEGORY: dict[str, tuple[str, ...]] = {
    "math": (
        "abstract_algebra",
        "college_mathematics",
        "elementary_mathematics",
        "high_school_mathematics",
        "high_school_statistics",
    ),
    "health": (
        "anatomy",
        "clinical_knowledge",
        "college_medicine",
        "human_aging",
        "medical_genetics",
        "nutrition",
        "professional_medicine",
        "virology",
    ),
    "physics": ("astronomy", "college_physics", "conceptual_physics", "high_school_physics"),
    "business": ("business_ethics", "management", "marketing"),
    "biology": ("college_biology", "high_school_biology"),
    "chemistry": ("college_chemistry", "high_school_chemistry"),
    "computer science": (
        "college_computer_science",
        "computer_security",
        "high_school_computer_science",
        "machine_learning",
    ),
    "economics": ("econometrics", "high_school_macroeconomics", "high_school_microeconomics"),
    "engineering": ("electrical_engineering",),
    "philosophy": (
        "formal_logic",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "world_religions",
    ),
    "other": ("global_facts", "miscellaneous", "professional_accounting"),
    "history": (
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "prehistory",
    ),
    "geography": ("high_school_geography",),
    "politics": (
        "high_school_government_and_politics",
        "public_relations",
        "security_studies",
        "us_foreign_policy",
    ),
    "psychology": ("high_school_psychology", "professional_psychology"),
    "culture": ("human_sexuality", "sociology"),
    "law": ("international_law", "jurisprudence", "professional_law"),
}

#: subject -> list of subcategories (each MMLU subject has exactly one).
SUBJECT_SUBCATEGORIES: dict[str, list[str]] = {
    subject: [subcat] for subcat, subjects in _BY_SUBCATEGORY.items() for subject in subjects
}
SUBJECT_SUBCATEGORIES = dict(sorted(SUBJECT_SUBCATEGORIES.items()))
SUBJECTS: tuple[str, ...] = tuple(SUBJECT_SUBCATEGORIES)


def subject_categories(subject: str) -> tuple[list[str], list[str]]:
    """``(subcategories, categories)`` of a subject; empty lists for a subject outside the 57."""
    subcats = SUBJECT_SUBCATEGORIES.get(subject, [])
    cats = [cat for cat, members in CATEGORIES.items() if any(s in members for s in subcats)]
    return list(subcats), cats
