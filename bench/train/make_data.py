"""Writes the fine-tuning benchmark's dataset: 100 chat examples (question -> JSON with SQL and a
chart) over the Ask-Data demo schema, generated from templates with a fixed seed, so Shovel and
the PEFT anchor train on the same bytes. Usage: python3 make_data.py OUT.jsonl [N]"""
import json
import random
import sys

SYSTEM = ("Translate the question into SQLite over sales(order_date, region, province, city, category, "
          "product, channel, quantity, amount, profit). Reply with JSON {sql, chart: {type, x, y}}.")
REGIONS = [("华北", "North China"), ("东北", "Northeast China"), ("华东", "East China"), ("华中", "Central China"),
           ("华南", "South China"), ("西南", "Southwest China"), ("西北", "Northwest China")]
CATS = [("办公用品", "office supplies"), ("家具", "furniture"), ("电子产品", "electronics")]
METRICS = [("销售额", "sales", "amount"), ("利润", "profit", "profit"), ("销量", "units sold", "quantity")]


def example(rng):
    kind = rng.randrange(5)
    (rz, ren), (cz, cen), (mz, men, col) = rng.choice(REGIONS), rng.choice(CATS), rng.choice(METRICS)
    year = rng.choice([2018, 2019, 2020])
    zh = rng.random() < 0.6
    if kind == 0:
        a, b = sorted(rng.sample(range(1, 13), 2))
        q = f"{rz}地区{year}年{a}-{b}月的{mz},用折线图来表示" if zh else f"{ren} {men} by month from {a}/{year} to {b}/{year} as a line chart"
        sql = (f"SELECT substr(order_date, 1, 7) AS month, ROUND(SUM({col}), 2) AS total FROM sales WHERE region = '{rz}' "
               f"AND order_date BETWEEN '{year}-{a:02d}-01' AND '{year}-{b:02d}-31' GROUP BY month ORDER BY month")
        chart = {"type": "line", "x": "month", "y": "total"}
    elif kind == 1:
        q = f"{year}年各地区的{mz}对比" if zh else f"Compare {men} across regions in {year}"
        sql = f"SELECT region, ROUND(SUM({col}), 2) AS total FROM sales WHERE order_date LIKE '{year}-%' GROUP BY region ORDER BY total DESC"
        chart = {"type": "bar", "x": "region", "y": "total"}
    elif kind == 2:
        q = f"{rz}{year}年各品类{mz}占比" if zh else f"Share of {men} by category in {ren} in {year}"
        sql = f"SELECT category, ROUND(SUM({col}), 2) AS total FROM sales WHERE region = '{rz}' AND order_date LIKE '{year}-%' GROUP BY category"
        chart = {"type": "pie", "x": "category", "y": "total"}
    elif kind == 3:
        q = f"{year}年{cz}的总{mz}是多少" if zh else f"What was the total {men} of {cen} in {year}?"
        sql = f"SELECT ROUND(SUM({col}), 2) AS total FROM sales WHERE category = '{cz}' AND order_date LIKE '{year}-%'"
        chart = {"type": "number", "x": None, "y": "total"}
    else:
        n = rng.choice([3, 5, 10])
        q = f"{year}年{mz}最高的{n}个城市" if zh else f"Top {n} cities by {men} in {year}"
        sql = f"SELECT city, ROUND(SUM({col}), 2) AS total FROM sales WHERE order_date LIKE '{year}-%' GROUP BY city ORDER BY total DESC LIMIT {n}"
        chart = {"type": "bar", "x": "city", "y": "total"}
    answer = json.dumps({"sql": sql, "chart": chart}, ensure_ascii=False)
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}, {"role": "assistant", "content": answer}]}


def main():
    out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rng = random.Random(7)
    with open(out, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps(example(rng), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
