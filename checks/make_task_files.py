#!/usr/bin/env python3
"""Writes tests/data/tasks/<task>.parquet: small zero-shot task files in the exact schema of each
task's hub parquet file (column names and Arrow types of the datasets' features), with items
written here by hand (not taken from the datasets). Snappy-compressed, as the hub's files.

    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow && /tmp/pa/bin/python checks/make_task_files.py

The same files serve the Rust tests (as a --data-dir) and checks/lm_eval_compare.sh (as
lm-eval's local parquet data files). For a benchmark, `--repeat N --out DIR` writes N variants
of every item (a number put into the context, so that no two requests are alike; the answer
and the choices unchanged):

    python3 checks/make_task_files.py --repeat 200 --out /tmp/bench/tasks
"""
import argparse
import os
import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tasks"))
ap.add_argument("--repeat", type=int, default=1)
args = ap.parse_args()
OUT = args.out
os.makedirs(OUT, exist_ok=True)
S = pa.string()

# The column each task's variants number (k = 1..N-1; variant 0 is the item itself).
VARY = {"piqa": "goal", "arc_easy": "question", "arc_challenge": "question", "hellaswag": "ctx_a",
        "winogrande": "sentence", "boolq": "passage", "rte": "sentence1", "openbookqa": "question_stem",
        "lambada_openai": "text"}


def variants(name, rows):
    out = []
    for k in range(args.repeat):
        for r in rows:
            r = dict(r)
            if k:
                col = VARY[name]
                r[col] = f"({k}) {r[col]}"
            out.append(r)
    return out
LS = pa.list_(pa.string())


def write(name, schema, rows):
    table = pa.Table.from_pylist(variants(name, rows), schema=pa.schema(schema))
    pq.write_table(table, os.path.join(OUT, f"{name}.parquet"), compression="snappy")


def labelled(texts, labels):
    return {"text": texts, "label": labels}


CHOICES = pa.struct([("text", LS), ("label", LS)])

write("piqa", [("goal", S), ("sol1", S), ("sol2", S), ("label", pa.int64())], [
    {"goal": "To dry a wet phone", "sol1": "put it in a bowl of rice.", "sol2": "put it in a bowl of soup.", "label": 0},
    {"goal": "How do I keep bread fresh?", "sol1": "Leave it open on the counter in the sun.", "sol2": "Store it in a sealed bag.", "label": 1},
    {"goal": "To light a candle", "sol1": "hold a lit match to the wick.", "sol2": "hold an ice cube to the wick.", "label": 0},
    {"goal": "Clean a greasy pan ", "sol1": "Scrub it with hot soapy water.", "sol2": "Wipe it with a dry leaf once.", "label": 0},
    {"goal": "To open a jar that is stuck,", "sol1": "run the lid under hot water, then twist.", "sol2": "freeze the jar overnight and shake it.", "label": 0},
])

ARC = [("id", S), ("question", S), ("choices", CHOICES), ("answerKey", S)]
write("arc_easy", ARC, [
    {"id": "Q1", "question": "Which of these is a liquid at room temperature?", "choices": labelled(["ice", "water", "steam", "sand"], ["A", "B", "C", "D"]), "answerKey": "B"},
    {"id": "Q2", "question": "What do plants need to make food?", "choices": labelled(["sunlight", "darkness", "plastic"], ["A", "B", "C"]), "answerKey": "A"},
    {"id": "Q3", "question": "Which animal lays eggs?", "choices": labelled(["dog", "cow", "hen", "cat"], ["1", "2", "3", "4"]), "answerKey": "3"},
    {"id": "Q4", "question": "The Sun is a", "choices": labelled(["planet", "moon", "star", "comet"], ["A", "B", "C", "D"]), "answerKey": "C"},
])
write("arc_challenge", ARC, [
    {"id": "C1", "question": "A student heats water from 20 °C to 80 °C. Which property changes most?", "choices": labelled(["its mass", "its temperature", "its chemical formula", "its number of atoms"], ["A", "B", "C", "D"]), "answerKey": "B"},
    {"id": "C2", "question": "Which process moves water from leaves into the air?", "choices": labelled(["transpiration", "condensation", "erosion", "fusion"], ["A", "B", "C", "D"]), "answerKey": "A"},
    {"id": "C3", "question": "Why does a metal spoon feel colder than a wooden one?", "choices": labelled(["It is heavier.", "It conducts heat away faster.", "It is shinier.", "It is older."], ["A", "B", "C", "D"]), "answerKey": "B"},
])

write("hellaswag", [("ind", pa.int32()), ("activity_label", S), ("ctx_a", S), ("ctx_b", S), ("ctx", S), ("endings", LS),
                    ("source_id", S), ("split", S), ("split_type", S), ("label", S)], [
    {"ind": 1, "activity_label": "Making tea", "ctx_a": "A man fills a kettle with water.", "ctx_b": "he",
     "ctx": "A man fills a kettle with water. he", "endings": ["puts the kettle on the stove.", "throws the kettle into a lake.", "paints the kettle [title] blue.", "eats the water."],
     "source_id": "handmade~1", "split": "val", "split_type": "indomain", "label": "0"},
    {"ind": 2, "activity_label": "Home and Garden", "ctx_a": "[header] How to water a plant [title] Check the soil.", "ctx_b": "",
     "ctx": "[header] How to water a plant [title] Check the soil. ", "endings": ["[step] If it is dry, pour water slowly at the base.", "Set the plant on fire.", "Bury the  plant in the freezer.", "Sing to the pot loudly for a year."],
     "source_id": "wikihow~2", "split": "val", "split_type": "zeroshot", "label": "0"},
    {"ind": 3, "activity_label": "Running", "ctx_a": "A woman ties her shoes at the start line.", "ctx_b": "THE race",
     "ctx": "A woman ties her shoes at the start line. THE race", "endings": ["begins and she runs.", "swims across the ocean.", "turns into a tree.", "eats the shoes."],
     "source_id": "handmade~3", "split": "val", "split_type": "indomain", "label": "0"},
])

write("winogrande", [("sentence", S), ("option1", S), ("option2", S), ("answer", S)], [
    {"sentence": "The cup fell off the shelf because _ was too close to the edge.", "option1": "the cup", "option2": "the shelf", "answer": "1"},
    {"sentence": "Anna gave Maria a gift because _ was celebrating her birthday.", "option1": "Anna", "option2": "Maria", "answer": "2"},
    {"sentence": "The suitcase did not fit in the car because the _ was too big.", "option1": "suitcase", "option2": "car", "answer": "1"},
    {"sentence": "Tom could not lift the box, so he asked Sam, since _ was stronger.", "option1": "Tom", "option2": "Sam", "answer": "2"},
])

write("boolq", [("question", S), ("passage", S), ("idx", pa.int32()), ("label", pa.int64())], [
    {"question": "do cats purr when they are content", "passage": "Domestic cats often purr when relaxed or content, and sometimes when stressed.", "idx": 0, "label": 1},
    {"question": "is the moon made of cheese", "passage": "The Moon is a rocky body whose crust is made mostly of silicate rock.", "idx": 1, "label": 0},
    {"question": "can penguins fly", "passage": "Penguins are flightless birds; their wings have evolved into flippers for swimming.", "idx": 2, "label": 0},
])

write("rte", [("sentence1", S), ("sentence2", S), ("label", pa.int64()), ("idx", pa.int32())], [
    {"sentence1": "It rained all night in the town.", "sentence2": "The town got rain.", "label": 0, "idx": 0},
    {"sentence1": "The shop closes at six every day.", "sentence2": "The shop is open at midnight.", "label": 1, "idx": 1},
    {"sentence1": "Maria bought three apples and ate one.", "sentence2": "Maria ate an apple.", "label": 0, "idx": 2},
])

write("openbookqa", [("id", S), ("question_stem", S), ("choices", CHOICES), ("answerKey", S)], [
    {"id": "o1", "question_stem": "The sun is responsible for", "choices": labelled(["puppies learning new tricks", "plants sprouting, blooming and wilting", "children growing up", "flowers wilting in a vase"], ["A", "B", "C", "D"]), "answerKey": "B"},
    {"id": "o2", "question_stem": "An example of a conductor is", "choices": labelled(["a rubber band", "a copper wire", "a wooden stick", "a glass rod"], ["A", "B", "C", "D"]), "answerKey": "B"},
    {"id": "o3", "question_stem": "Which would float on water?", "choices": labelled(["an iron nail", "a stone", "a cork", "a coin"], ["A", "B", "C", "D"]), "answerKey": "C"},
])

write("lambada_openai", [("text", S)], [
    {"text": "She put the key in the lock, turned it slowly, and pushed open the door"},
    {"text": "After the long walk home in the rain, all he wanted was a hot cup of tea"},
    {"text": "The children counted the stars until, one by one, they fell asleep"},
    {"text": "When the music stopped, everyone in the hall looked at the piano"},
    {"text": "Everyone in the café was waiting for the  rain"},
])
print("wrote", sorted(os.listdir(OUT)))
