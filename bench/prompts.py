"""First-turn questions from MT-Bench (lmsys/mt_bench_human_judgments), two per category.

Typed in here because the data set cannot be downloaded on the event machines; the benchmarks use
them as realistic prompt lengths and answer lengths for a chat model.
"""

from __future__ import annotations

MT_BENCH = [
    # writing
    "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural "
    "experiences and must-see attractions.",
    "Draft a professional email seeking your supervisor's feedback on the 'Quarterly Financial Report' "
    "you prepared. Ask specifically about the data analysis, presentation style, and the clarity of "
    "conclusions drawn. Keep the email short and to the point.",
    # roleplay
    "Pretend yourself to be Elon Musk in all the following conversations. Speak like Elon Musk as much "
    "as possible. Why do we need to go to Mars?",
    'Embrace the role of Sheldon from "The Big Bang Theory" as we delve into our conversation. Don\'t '
    'start with phrases like "As Sheldon". Let\'s kick things off with the following question: "What is '
    'your opinion on hand dryers?"',
    # reasoning
    "Imagine you are participating in a race with a group of people. If you have just overtaken the "
    "second person, what's your current position? Where is the person you just overtook?",
    "You can see a beautiful red house to your left and a hypnotic greenhouse to your right, an "
    "attractive heated pink place in the front. So, where is the White House?",
    # math
    "The vertices of a triangle are at points (0, 0), (-1, 1), and (3, 3). What is the area of the triangle?",
    "A tech startup invests $8000 in software development in the first year, and then invests half of "
    "that amount in software development in the second year. What's the total amount the startup "
    "invested in software development over the two years?",
    # coding
    "Develop a Python program that reads all the text files under a directory and returns top-5 words "
    "with the most number of occurrences.",
    "Write a C++ program to find the nth Fibonacci number using recursion.",
    # extraction
    "Given these categories - Literature, History, Science, and Art. Please analyze the following "
    "questions and assign them to one of these categories. In your response, refrain from uttering any "
    "extraneous words. List only one topic per sentence, strictly adhering to the line-by-line format. "
    "1. Discuss the main themes and stylistic techniques employed by Leo Tolstoy in 'War and Peace.' "
    "2. Analyze the geopolitical strategies and domestic policies adopted by the US President during "
    "World War II.",
    "Identify the named entities (people, organizations, locations) mentioned in the given news "
    "article. Please generate a JSON dictionary that lists the named entities in three separate groups "
    "based on their entity types. The key is the type of entity and the value is a list of strings. "
    "Yesterday, Adamson Emerson, the CEO of Faraday, and Dieter Zetsche, the CEO of Daimler AG, "
    "announced plans to build a new Gigafactory in Berlin.",
    # stem
    "Consider a satellite that is in a circular orbit around the Earth. The speed of the satellite "
    "decreases. What will happen to the satellite's orbital radius and period of revolution? Please "
    "justify your answer using principles of physics.",
    "Photosynthesis is a vital process for life on Earth. Could you outline the two main stages of "
    "photosynthesis, including where they take place within the chloroplast, and the primary inputs "
    "and outputs for each stage?",
    # humanities
    "Provide insights into the correlation between economic indicators such as GDP, inflation, and "
    "unemployment rates. Explain how fiscal and monetary policies affect those indicators.",
    "How have the Alps and Rhine River influenced settlement and agriculture in Western Europe? List "
    "three impacts.",
]

SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."


def chats(count: int = len(MT_BENCH)) -> list[list[dict[str, str]]]:
    """``count`` chats (system prompt + one MT-Bench question), cycling through the questions."""
    return [
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": MT_BENCH[i % len(MT_BENCH)]}]
        for i in range(count)
    ]
