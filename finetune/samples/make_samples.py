"""Regenerate the bundled sample dataset: `python -m finetune.samples.make_samples`.

A small, deterministic, learnable chat task (capitals, sums, reversed words) so a
new user sees the loss fall and the fine-tuned answers change within a minute on CPU.
"""

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Brazil": "Brasilia",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Russia": "Moscow",
    "Australia": "Canberra",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Vietnam": "Hanoi",
    "Thailand": "Bangkok",
    "Argentina": "Buenos Aires",
    "Morocco": "Rabat",
}
WORDS = [
    "apple",
    "river",
    "garden",
    "window",
    "silver",
    "planet",
    "rocket",
    "butter",
    "candle",
    "forest",
    "bridge",
    "pencil",
    "marble",
    "yellow",
    "coffee",
    "dragon",
    "summer",
    "winter",
    "orange",
    "guitar",
]
SYSTEM = "You are a concise assistant. Answer in one sentence."


def rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for country, capital in CAPITALS.items():
        out.append((f"What is the capital of {country}?", f"The capital of {country} is {capital}."))
    for _ in range(60):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        out.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    for word in WORDS:
        out.append((f"Spell the word {word} backwards.", f"{word} backwards is {word[::-1]}."))
    rng.shuffle(out)
    result = []
    for i, (question, answer) in enumerate(out):
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if i % 3 == 0:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        result.append({"messages": messages})
    return result


def _parts(row: dict) -> tuple[str, str, str]:
    """(system, question, answer) of a chat row from rows()."""
    by_role = {m["role"]: m["content"] for m in row["messages"]}
    return by_role.get("system", ""), by_role["user"], by_role["assistant"]


def write_other_formats(folder: Path) -> list[Path]:
    """The same rows as alpaca JSONL, a ShareGPT JSON array, prompt-completion CSV and text Parquet."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [_parts(row) for row in rows()]
    alpaca = folder / "sample_alpaca.jsonl"
    with open(alpaca, "w", encoding="utf-8") as fh:
        for system, question, answer in parts:
            record = {"instruction": question, "input": "", "output": answer}
            if system:
                record["system"] = system
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = folder / "sample_sharegpt.json"
    conversations = [
        {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in row["messages"]]}
        for row in rows()
    ]
    sharegpt.write_text(json.dumps(conversations, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    prompt_completion = folder / "sample_prompt_completion.csv"
    with open(prompt_completion, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "completion"])
        for _, question, answer in parts:
            writer.writerow([f"Question: {question}\nAnswer:", f" {answer}"])
    text = folder / "sample_text.parquet"
    table = pa.table({"text": [f"Question: {question}\nAnswer: {answer}" for _, question, answer in parts]})
    pq.write_table(table, text)
    return [alpaca, sharegpt, prompt_completion, text]


def short_answer(answer: str) -> str:
    """The bare fact of a sample answer: "The capital of France is Paris." -> "Paris."."""
    return answer.rsplit(" is ", 1)[-1]


def preference_rows() -> list[dict]:
    """The chat sample's questions with the bare answer chosen ("Paris.") over the full sentence the
    demo was taught ("The capital of France is Paris."): the base prefers the sentence, so a
    preference run visibly moves its preference (and its answers) to the short form."""
    out = []
    for row in rows():
        system, question, answer = _parts(row)
        prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        out.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": short_answer(answer)}],
                "rejected": [{"role": "assistant", "content": answer}],
            }
        )
    return out


def write_preference_formats(folder: Path) -> list[Path]:
    """The preference sample (explicit prompt, conversations), the same pairs with an implicit prompt and as
    plain text, and KTO's unpaired prompt/completion/label rows."""
    pairs = preference_rows()
    explicit = folder / "sample_preference.jsonl"
    implicit = folder / "sample_preference_implicit.jsonl"
    text = folder / "sample_preference_text.csv"
    unpaired = folder / "sample_kto.jsonl"
    with open(explicit, "w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    with open(implicit, "w", encoding="utf-8") as fh:
        for pair in pairs:
            record = {"chosen": pair["prompt"] + pair["chosen"], "rejected": pair["prompt"] + pair["rejected"]}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    import csv

    with open(text, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "chosen", "rejected"])
        for pair in pairs:
            question = pair["prompt"][-1]["content"]
            writer.writerow(
                [
                    f"Question: {question}\nAnswer:",
                    f" {pair['chosen'][0]['content']}",
                    f" {pair['rejected'][0]['content']}",
                ]
            )
    with open(unpaired, "w", encoding="utf-8") as fh:
        for pair in pairs:  # every prompt with one good and one bad completion
            for good in (True, False):
                record = {"prompt": pair["prompt"], "completion": pair["chosen" if good else "rejected"], "label": good}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return [explicit, implicit, text, unpaired]


def prompt_rows() -> list[dict]:
    """GRPO's prompts with answers: the chat sample's questions (with their system turns) and the bare fact
    each asks for ("Paris", "42", "nedrag"), plus the kind of question as a column the reward functions get.
    The demo base rambles on in a chat, so its sampled completions contain the answer only now and then."""
    out = []
    for row in rows():
        system, question, answer = _parts(row)
        prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        task = "capital" if "capital" in question else "sum" if "plus" in question else "reverse"
        out.append({"prompt": prompt, "answer": short_answer(answer).rstrip("."), "task": task})
    return out


def write_prompt_formats(folder: Path) -> list[Path]:
    target = folder / "sample_prompts.jsonl"
    with open(target, "w", encoding="utf-8") as fh:
        for row in prompt_rows():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return [target]


if __name__ == "__main__":
    target = Path(__file__).parent / "sample_chat.jsonl"
    with open(target, "w", encoding="utf-8") as fh:
        for row in rows():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {target}")
    written = write_other_formats(target.parent) + write_preference_formats(target.parent)
    for path in written + write_prompt_formats(target.parent):
        print(f"wrote {path}")
