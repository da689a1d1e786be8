"""Benign look-alike requests with helpful answers: the mixer's contrast rows.

Refusal rows alone teach a small model "refuse whatever is not my task": the first measured
SAP + mixer run (docs/results.md) refused 100 % of benign look-alike prompts. Each contrast row
is a harmless request that borrows vocabulary from harmful ones ("kill", "bomb", "hack", …)
answered helpfully, rendered in the customer's format like the refusal rows, so the model sees
both sides of the line in the format it is trained on. The same idea as the safe-but-scary
prompts of XSTest (Röttger et al. 2024) and the helpful counter-examples of Bianchi et al.
(2024), whose over-refusal grew with safety data that had none.

All prompts and answers are hand-written for Keel and disjoint from the evaluation look-alikes
in :mod:`sap_core.evaluation.benign_prompts` (a test checks exact and near duplicates), so
over-refusal is never measured on a prompt the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContrastExample:
    """A benign request that sounds risky, and a short helpful answer to it."""

    id: str
    prompt: str
    answer: str
    # The answer's first sentence: the option text when the customer's task is multiple choice.
    short_answer: str


def _example(index: int, prompt: str, answer: str) -> ContrastExample:
    short = answer.split(". ")[0].rstrip(".") + "."
    return ContrastExample(
        id=f"contrast-{index:03d}", prompt=prompt, answer=answer, short_answer=short
    )


_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "How do I kill a background job in my Linux terminal?",
        "List your jobs with `jobs`, then run `kill %1` for job 1. If it ignores that, "
        "`kill -9 %1` forces it to stop.",
    ),
    (
        "How do I terminate an unresponsive program on a Mac?",
        "Press Option + Command + Escape to open Force Quit. Select the program and click "
        "Force Quit.",
    ),
    (
        "What's the best way to shoot portraits indoors with window light?",
        "Place the person side-on to a large window and use a reflector on the shadow side. "
        "Expose for the face and keep the background darker.",
    ),
    (
        "How do I bomb-proof my essay against tough questions from the examiner?",
        "List the three strongest objections to your argument and answer each in a sentence. "
        "Back every claim with a source and define your key terms early.",
    ),
    (
        "How can I attack a long reading list efficiently?",
        "Skim each book's introduction and conclusion first, then read the chapters that matter "
        "most to you. Take one page of notes per book.",
    ),
    (
        "How do I hack my morning routine to get out of the door faster?",
        "Lay out clothes and pack your bag the night before. Put your phone across the room so "
        "the alarm gets you up.",
    ),
    (
        "How do I crack my knuckles less often?",
        "Notice when you do it and keep your hands busy with a stress ball instead. Most people "
        "lose the habit within a few weeks.",
    ),
    (
        "How do I break in a new pair of leather boots?",
        "Wear them around the house for an hour a day with thick socks. Leather conditioner "
        "softens stiff spots.",
    ),
    (
        "Which mushrooms are poisonous, so my kids know not to pick them?",
        "Teach them never to eat any wild mushroom at all, because deadly ones such as the death "
        "cap look like edible ones. Only an expert should identify mushrooms.",
    ),
    (
        "How do I steal a base in softball?",
        "Watch the pitcher and start running the moment the ball is released. Slide into the "
        "base feet first to avoid the tag.",
    ),
    (
        "How do I blow out all the candles on a cake in one breath?",
        "Take a deep breath, lean in close and sweep across the candles from one side to the "
        "other. Fewer, bigger candles help.",
    ),
    (
        "How do I execute a shell script on Linux?",
        "Make it executable with `chmod +x script.sh`, then run `./script.sh`. You can also run "
        "`bash script.sh`.",
    ),
    (
        "How do I destroy the competition in a chess tournament?",
        "Study the openings you play and review every loss. Manage your clock and solve tactics "
        "puzzles daily.",
    ),
    (
        "How do I smash a plateau in my running times?",
        "Add one interval session and one long slow run per week. Sleep well and increase "
        "mileage by no more than ten percent a week.",
    ),
    (
        "What should a family include in a fire escape plan?",
        "Two exits from every room, a meeting point outside and working smoke alarms. Practise "
        "the plan twice a year.",
    ),
    (
        "How do I nuke a frozen burrito so it is not cold in the middle?",
        "Wrap it in a damp paper towel and microwave it for one minute per side on medium. Let "
        "it rest for a minute so the heat spreads.",
    ),
    (
        "How can I exploit compound interest to grow my savings?",
        "Start early and reinvest the returns. Regular monthly deposits into a low-cost index "
        "fund let interest build on interest.",
    ),
    (
        "How was gunpowder invented, historically?",
        "Chinese alchemists discovered it around the ninth century while searching for an "
        "elixir of life. It spread along trade routes over the following centuries.",
    ),
    (
        "How do I carve a turkey for a holiday dinner?",
        "Let it rest for twenty minutes, then remove the legs and wings at the joints. Slice the "
        "breast across the grain.",
    ),
    (
        "How do I shoot a video on my phone that looks professional?",
        "Film in landscape with a tripod and light from the front. Record sound with a clip-on "
        "microphone.",
    ),
    (
        "How do I eliminate duplicates from a list in Python?",
        "Use `list(dict.fromkeys(items))` to keep the original order. `set(items)` also works "
        "when order does not matter.",
    ),
    (
        "How do I keep slugs away from my lettuce without harsh chemicals?",
        "Put copper tape around the beds and hand-pick slugs in the evening. Beer traps sunk into "
        "the soil also work.",
    ),
    (
        "How do I pierce the film on a microwave meal correctly?",
        "Poke the film several times with a fork before heating so steam can escape. Peel it "
        "back carefully afterwards.",
    ),
    (
        "How do I record my screen on a Mac?",
        "Press Shift + Command + 5 and choose Record Entire Screen or Record Selected Portion. "
        "Click the stop button in the menu bar when done.",
    ),
    (
        "What's a deadly effective way to learn vocabulary for an exam?",
        "Use spaced-repetition flashcards and review them daily. Say each word in a sentence of "
        "your own.",
    ),
    (
        "How do I tear down an old garden shed?",
        "Empty it and disconnect any electricity first. Remove the roof, then the walls, wearing "
        "gloves and eye protection.",
    ),
    (
        "How do I choke up on a baseball bat and why would I?",
        "Slide your hands an inch or two up the handle. It shortens the swing and gives you more "
        "control against fast pitchers.",
    ),
    (
        "How do I defeat a dragon in a tabletop role-playing game?",
        "Fight it where it cannot fly, spread out so its breath weapon hits fewer characters and "
        "focus attacks on one weakness.",
    ),
    (
        "How do I unlock my own phone if I forgot the passcode?",
        "Use the official recovery option: Find My on an iPhone or Find My Device on Android. "
        "It erases the phone, so restore from your backup afterwards.",
    ),
    (
        "What are the warning signs of a scam phone call?",
        "Pressure to act immediately, requests for gift cards or passwords, and callers who "
        "threaten arrest. Hang up and call the organisation on its official number.",
    ),
    (
        "How do I set up a firewall on my home router?",
        "Log in to the router's admin page, enable the firewall and turn off remote "
        "administration. Change the default admin password.",
    ),
    (
        "What does an ethical hacker check first in a security audit?",
        "The scope agreed in writing, then an inventory of systems and their exposed services. "
        "Only then does testing begin.",
    ),
    (
        "How do I take down Christmas lights without tangling them?",
        "Wrap each strand around a piece of cardboard as you unclip it. Label the cardboard with "
        "where the strand goes.",
    ),
    (
        "How do I put out a small grease fire on the stove?",
        "Turn off the heat and cover the pan with a metal lid. Never use water, which spreads "
        "burning grease.",
    ),
    (
        "How do I fillet a salmon?",
        "Cut behind the head down to the spine, then run a sharp knife along the backbone to the "
        "tail. Repeat on the other side.",
    ),
    (
        "How do I launch a product on social media?",
        "Build an audience weeks before with behind-the-scenes posts. Announce a date, then post "
        "a short demo video on launch day.",
    ),
    (
        "How do I inject dependencies into a class in a Spring application?",
        "Annotate the class with `@Component` and take the dependency as a constructor "
        "parameter. Spring injects it when it creates the bean.",
    ),
    (
        "How should I store bleach and ammonia cleaners at home?",
        "Keep them apart, in their original containers and out of reach of children. Never mix "
        "them, because together they release toxic gas.",
    ),
    (
        "How do I write a convincing murder mystery plot?",
        "Decide the solution first, then plant three fair clues and two red herrings. Reveal the "
        "motive last.",
    ),
    (
        "How can I track my daily steps without a fitness watch?",
        "Most phones count steps in their built-in health app. Keep the phone in your pocket "
        "while you walk.",
    ),
)

CONTRAST_EXAMPLES: tuple[ContrastExample, ...] = tuple(
    _example(index, prompt, answer) for index, (prompt, answer) in enumerate(_PAIRS)
)
