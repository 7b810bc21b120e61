#!/usr/bin/env python3
"""Writes train.jsonl (labelled teaching examples, generated from phrasing templates with a fixed
seed) and eval.jsonl (hand-written evaluation questions, phrased unlike the templates) for the
Ask-Data demo database. The SQL follows one house style so a small model can learn it:

  month  substr(order_date,1,7) AS month      year  substr(order_date,1,4) AS year
  ranges substr(order_date,1,7) BETWEEN 'YYYY-MM' AND 'YYYY-MM'
  sums   ROUND(SUM(amount),2) AS amount, ROUND(SUM(profit),2) AS profit, SUM(quantity) AS quantity,
         COUNT(*) AS orders

Run from anywhere: python3 crates/askdata/data/make_sets.py. The Rust test
`eval::tests::the_shipped_sets_are_consistent_with_the_demo_database` runs every gold query.
"""
import json, os, random, re

HERE = os.path.dirname(os.path.abspath(__file__))
D = json.load(open(os.path.join(HERE, "dimensions.json")))
REGIONS = [(r["name"], r["english"]) for r in D["regions"]]
PROVINCES = [p for r in D["regions"] for p in r["provinces"]]
CITIES = sorted({c for r in D["regions"] for cs in r["provinces"].values() for c in cs if c not in PROVINCES})
CATS = [(c["name"], c["english"]) for c in D["categories"]]
PRODUCTS = [p for c in D["categories"] for p in c["products"]]
CHANNELS = [(c["name"], c["english"]) for c in D["channels"]]
A = json.load(open(os.path.join(HERE, "aliases.json")))
EN = {**A["provinces"], **A["cities"], **A["products"]}
EN_MONTH = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]

MEASURES = {
    # key: (Chinese words, English words, select expr, alias)
    "amount": (["销售额", "营收", "销售收入", "销售金额"], ["sales", "revenue", "turnover", "sales amount"], "ROUND(SUM(amount),2) AS amount", "amount"),
    "profit": (["利润", "盈利", "毛利"], ["profit", "earnings"], "ROUND(SUM(profit),2) AS profit", "profit"),
    "quantity": (["销量", "销售数量", "卖出的件数"], ["units sold", "quantity sold", "sales volume"], "SUM(quantity) AS quantity", "quantity"),
    "orders": (["订单数", "订单量", "订单笔数"], ["number of orders", "order count", "orders"], "COUNT(*) AS orders", "orders"),
}
DIMS = {
    "region": (["地区", "大区", "区域"], ["region"]),
    "category": (["品类", "类别", "产品类别"], ["category", "product category"]),
    "channel": (["渠道", "销售渠道"], ["channel", "sales channel"]),
    "province": (["省份", "省"], ["province"]),
    "city": (["城市"], ["city"]),
    "product": (["产品", "商品"], ["product"]),
}
PLURAL = {"region": "regions", "category": "categories", "product category": "product categories", "channel": "channels", "sales channel": "sales channels", "province": "provinces", "city": "cities", "product": "products"}


def measure(rng, keys):
    k = rng.choice(keys)
    zs, es, expr, al = MEASURES[k]
    return rng.choice(zs), rng.choice(es), expr, al


def dim(rng, d):
    zs, es = DIMS[d]
    return rng.choice(zs), rng.choice(es)


# While set, period() names no period: the question covers all the data (and its SQL filters no
# dates). Real users often leave the period out; without such examples the model invents one.
ALL_TIME = False


def period(rng, multi_month=False):
    """(zh, en, condition) for a random time period."""
    if ALL_TIME:
        return rng.choice(["", "", "历史上", "累计", "至今"]), rng.choice(["", "", "overall", "of all time", "so far"]), ""
    y = rng.choice([2018, 2019, 2020])
    kinds = ["range", "quarter", "half", "year"] + ([] if multi_month else ["month"])
    k = rng.choice(kinds)
    if k == "year":
        return rng.choice([f"{y}年", f"{y}年全年", f"{y}年度"]), rng.choice([f"in {y}", f"for {y}", f"during {y}"]), f"substr(order_date,1,4)='{y}'"
    if k == "month":
        m = rng.randint(1, 12)
        return f"{y}年{m}月", rng.choice([f"in {EN_MONTH[m-1]} {y}", f"for {EN_MONTH[m-1][:3]} {y}"]), f"substr(order_date,1,7)='{y}-{m:02d}'"
    if k == "quarter":
        q = rng.randint(1, 4)
        zq = "一二三四"[q - 1]
        zh = rng.choice([f"{y}年第{zq}季度", f"{y}年Q{q}", f"{y}年{zq}季度"])
        en = rng.choice([f"in Q{q} {y}", f"in the {['first', 'second', 'third', 'fourth'][q-1]} quarter of {y}", f"during Q{q} {y}"])
        return zh, en, f"substr(order_date,1,7) BETWEEN '{y}-{3*q-2:02d}' AND '{y}-{3*q:02d}'"
    if k == "half":
        h = rng.randint(1, 2)
        return (f"{y}年{'上' if h == 1 else '下'}半年", f"in the {'first' if h == 1 else 'second'} half of {y}",
                f"substr(order_date,1,7) BETWEEN '{y}-{1 if h == 1 else 7:02d}' AND '{y}-{6 if h == 1 else 12:02d}'")
    a = rng.randint(1, 10)
    b = rng.randint(a + 1, min(12, a + 5))
    zh = rng.choice([f"{y}年{a}-{b}月", f"{y}年{a}月到{b}月", f"{y}年{a}至{b}月"])
    en = rng.choice([f"from {EN_MONTH[a-1]} to {EN_MONTH[b-1]} {y}", f"{EN_MONTH[a-1]}-{EN_MONTH[b-1]} {y}", f"between {EN_MONTH[a-1]} and {EN_MONTH[b-1]} {y}"])
    return zh, en, f"substr(order_date,1,7) BETWEEN '{y}-{a:02d}' AND '{y}-{b:02d}'"


def place(rng, kinds=("region", "province", "city", "category", "product", "channel")):
    """(zh, en, condition) for a random filter."""
    k = rng.choice(kinds)
    if k == "region":
        z, e = rng.choice(REGIONS)
        return rng.choice([f"{z}地区", z, f"{z}区"]), e, f"region='{z}'"
    if k == "province":
        p = rng.choice(PROVINCES)
        return rng.choice([p, p + ("省" if p not in ("北京", "天津", "上海", "重庆", "内蒙古", "广西", "西藏", "宁夏", "新疆") else "")]), EN[p], f"province='{p}'"
    if k == "city":
        c = rng.choice(CITIES)
        return rng.choice([f"{c}市", c]), EN[c], f"city='{c}'"
    if k == "category":
        z, e = rng.choice(CATS)
        return rng.choice([f"{z}类", z]), e.lower(), f"category='{z}'"
    if k == "product":
        p = rng.choice(PRODUCTS)
        return p, EN[p] + "s" if not EN[p].endswith(("s", "paper")) else EN[p], f"product='{p}'"
    z, e = rng.choice(CHANNELS)
    return rng.choice([f"{z}渠道", z]), rng.choice([f"the {e} channel", e]), f"channel='{z}'"


def where(*conds):
    conds = [c for c in conds if c]
    return (" WHERE " + " AND ".join(conds)) if conds else ""


def ex(q, sql, kind=None, x=None, y=None, series=None, error=None):
    if error:
        return {"question": q, "error": error}
    chart = {"type": kind}
    if x:
        chart["x"] = x
    if y:
        chart["y"] = y
    if series:
        chart["series"] = series
    return {"question": q, "sql": sql, "chart": chart}


def trend(rng, zh):
    mz, me, expr, al = measure(rng, ["amount", "amount", "profit", "quantity", "orders"])
    pz, pe, pc = place(rng, ("region", "region", "province", "city", "category", "channel", "product"))
    tz, te, tc = period(rng, multi_month=True)
    sql = f"SELECT substr(order_date,1,7) AS month, {expr} FROM sales{where(pc, tc)} GROUP BY month ORDER BY month"
    if zh:
        q = rng.choice([f"{pz}{tz}的{mz},用折线图来表示", f"{pz}{tz}每月{mz}走势", f"{tz}{pz}{mz}按月的变化趋势", f"画出{pz}{tz}每个月的{mz}",
                        f"{pz}{tz}{mz}的月度变化", f"{tz}{pz}每个月{mz}是多少,画成曲线", f"看看{pz}{tz}{mz}逐月怎么变化"])
    else:
        q = rng.choice([f"Monthly {me} of {pe} {te} as a line chart", f"How did {me} in {pe} trend month by month {te}?", f"Plot {pe} {me} per month {te}",
                        f"Show the monthly {me} trend for {pe} {te}", f"{pe} {me} by month {te}, line chart"])
    return ex(q, sql, "line", "month", al)


def total(rng, zh):
    mz, me, expr, al = measure(rng, list(MEASURES))
    pz, pe, pc = place(rng)
    tz, te, tc = period(rng)
    sql = f"SELECT {expr} FROM sales{where(pc, tc)}"
    if zh:
        q = rng.choice([f"{pz}{tz}的{mz}是多少?", f"{tz}{pz}一共的{mz}", f"{pz}{tz}{mz}总计多少", f"{tz}{pz}的{mz}合计", f"{pz}在{tz}的总{mz}"])
        if al == "amount":
            q = rng.choice([q, f"{pz}{tz}卖了多少钱?", f"{tz}{pz}一共卖了多少钱"])
        if al == "quantity":
            q = rng.choice([q, f"{pz}{tz}一共卖出多少件?", f"{tz}{pz}卖了多少个"])
        if al == "orders":
            q = rng.choice([q, f"{pz}{tz}有多少笔订单?", f"{tz}{pz}下了几笔单"])
    else:
        q = rng.choice([f"What was the total {me} of {pe} {te}?", f"Total {me} for {pe} {te}", f"How much {me} did {pe} make {te}?" if al in ("amount", "profit") else f"How many {me} for {pe} {te}?"])
    return ex(q, sql, "number", None, al)


def compare(rng, zh):
    mz, me, expr, al = measure(rng, ["amount", "amount", "profit", "quantity", "orders"])
    tz, te, tc = period(rng)
    d = rng.choice(["region", "region", "category", "channel", "province_in_region"])
    if d == "province_in_region":
        rz, re_ = rng.choice(REGIONS)
        sql = f"SELECT province, {expr} FROM sales{where(f'region={chr(39)}{rz}{chr(39)}', tc)} GROUP BY province ORDER BY {al} DESC"
        q = rng.choice([f"{rz}地区{tz}各省份的{mz}对比", f"{rz}各省{tz}的{mz}分别是多少", f"{tz}{rz}哪个省的{mz}最高"]) if zh else rng.choice([f"Compare {me} of the provinces of {re_} {te}", f"{me.capitalize()} by province in {re_} {te}"])
        return ex(q, sql, "bar", "province", al)
    dz, de = dim(rng, d)
    sql = f"SELECT {d}, {expr} FROM sales{where(tc)} GROUP BY {d} ORDER BY {al} DESC"
    if zh:
        q = rng.choice([f"{tz}各{dz}的{mz}对比", f"{tz}不同{dz}的{mz},用柱状图表示", f"按{dz}比较{tz}的{mz}", f"{tz}各个{dz}{mz}分别是多少", f"{tz}哪个{dz}的{mz}最高?画柱状图", f"{tz}每个{dz}的{mz}排名"])
    else:
        q = rng.choice([f"Compare {me} across each {de} {te}", f"{me.capitalize()} by {de} {te}, bar chart", f"Which {de} had the highest {me} {te}? Compare them all", f"Bar chart of {me} per {de} {te}"])
    return ex(q, sql, "bar", d, al)


def share(rng, zh):
    mz, me, expr, al = measure(rng, ["amount", "amount", "profit", "quantity"])
    tz, te, tc = period(rng)
    d = rng.choice(["category", "channel", "region"])
    pz, pe, pc = ("", "", "") if d == "region" else place(rng, ("region", "province"))
    dz, de = dim(rng, d)
    sql = f"SELECT {d}, {expr} FROM sales{where(pc, tc)} GROUP BY {d}"
    if zh:
        q = rng.choice([f"{pz}{tz}各{dz}{mz}占比", f"{tz}{pz}{mz}的{dz}构成,用饼图表示", f"{pz}{tz}{mz}按{dz}的比例", f"{tz}{pz}{mz}在各{dz}之间的分布,饼图", f"{pz}{tz}各{dz}的{mz}份额"])
    else:
        where_en = (" in " + pe) if pe else ""
        q = rng.choice([f"Share of {me} by {de}{where_en} {te}", f"Pie chart of {me} by {de} {te}" + (f" for {pe}" if pe else ""), f"What fraction of {me}{where_en} {te} came from each {de}?", f"Breakdown of {me} by {de}{where_en} {te} as a pie"])
    return ex(q, sql, "pie", d, al)


def top(rng, zh):
    mz, me, expr, al = measure(rng, ["amount", "amount", "profit", "quantity"])
    tz, te, tc = period(rng)
    n = rng.choice([3, 5, 10])
    d = rng.choice(["city", "product", "province"])
    pz, pe, pc = ("", "", "") if rng.random() < 0.5 else place(rng, ("region", "category", "channel"))
    if d == "product" and pc.startswith("category"):
        pz, pe, pc = "", "", ""
    dz, de = dim(rng, d)
    de = PLURAL[de]
    zn = {3: rng.choice(["3", "三"]), 5: rng.choice(["5", "五"]), 10: rng.choice(["10", "十"])}[n]
    sql = f"SELECT {d}, {expr} FROM sales{where(pc, tc)} GROUP BY {d} ORDER BY {al} DESC LIMIT {n}"
    if zh:
        q = rng.choice([f"{tz}{pz}{mz}最高的{zn}个{dz}", f"{pz}{tz}{mz}排名前{zn}的{dz}", f"{tz}{pz}{mz}前{zn}名{dz}"] + ([f"{tz}{pz}卖得最好的前{zn}个{dz}"] if al == "amount" else []))
    else:
        in_pe = f" in {pe}" if pe else ""
        q = rng.choice([f"Top {n} {de} by {me} {te}{in_pe}", f"Which {n} {de} had the highest {me} {te}{in_pe}?", f"The {n} best {de} for {me}{in_pe} {te}"])
    return ex(q, sql, "bar", d, al)


def by_series(rng, zh):
    mz, me, expr, al = measure(rng, ["amount", "amount", "profit", "quantity"])
    y = rng.choice([2018, 2019, 2020])
    d = rng.choice(["channel", "category"])
    pz, pe, pc = ("", "", "") if rng.random() < 0.5 else place(rng, ("region",))
    sql = f"SELECT substr(order_date,1,7) AS month, {d}, {expr} FROM sales{where(pc, f'substr(order_date,1,4)={chr(39)}{y}{chr(39)}')} GROUP BY month, {d} ORDER BY month"
    if zh:
        dz = rng.choice(["线上和线下", "各渠道", "线上线下"]) if d == "channel" else rng.choice(["各品类", "三个品类", "各类别"])
        q = rng.choice([f"{y}年{pz}{dz}每月{mz}走势对比", f"{pz}{y}年{dz}每个月的{mz}", f"{y}年{pz}{dz}的月度{mz}对比折线"])
    else:
        de = rng.choice(["online vs offline", "by channel"]) if d == "channel" else rng.choice(["of each category", "by category"])
        q = rng.choice([f"Monthly {me} {de} in {y}" + (f" for {pe}" if pe else ""), f"{me.capitalize()} per month {de} through {y}" + (f" in {pe}" if pe else "") + ", one line each"])
    return ex(q, sql, "line", "month", al, series=d)


def yearly(rng, zh):
    mz, me, expr, al = measure(rng, ["amount", "profit", "orders", "quantity"])
    pz, pe, pc = place(rng)
    sql = f"SELECT substr(order_date,1,4) AS year, {expr} FROM sales{where(pc)} GROUP BY year ORDER BY year"
    q = rng.choice([f"{pz}每年的{mz}", f"{pz}历年{mz}对比", f"{pz}这三年每年的{mz}", f"{pz}{mz}逐年对比"]) if zh else rng.choice([f"{me.capitalize()} of {pe} per year", f"Yearly {me} for {pe}", f"{pe} {me} by year"])
    return ex(q, sql, "bar", "year", al)


def quarterly(rng, zh):
    mz, me, expr, al = measure(rng, ["amount", "profit", "quantity"])
    pz, pe, pc = place(rng, ("region", "category", "channel", "province"))
    y = rng.choice([2018, 2019, 2020])
    sql = f"SELECT (CAST(substr(order_date,6,2) AS INTEGER)+2)/3 AS quarter, {expr} FROM sales{where(pc, f'substr(order_date,1,4)={chr(39)}{y}{chr(39)}')} GROUP BY quarter ORDER BY quarter"
    q = rng.choice([f"{pz}{y}年各季度的{mz}", f"{y}年{pz}每个季度的{mz}", f"{pz}{y}年分季度{mz}"]) if zh else rng.choice([f"Quarterly {me} of {pe} in {y}", f"{me.capitalize()} by quarter for {pe} in {y}", f"{pe} {me} per quarter, {y}"])
    return ex(q, sql, "bar", "quarter", al)


def losses(rng, zh):
    pz, pe, pc = place(rng)
    tz, te, tc = period(rng)
    sql = f"SELECT COUNT(*) AS orders FROM sales{where('profit<0', pc, tc)}"
    q = rng.choice([f"{pz}{tz}有多少笔亏损的订单?", f"{tz}{pz}利润为负的订单数", f"{tz}{pz}亏钱的订单有几笔", f"{pz}{tz}赔钱的单子一共多少"]) if zh else rng.choice([f"How many loss-making orders did {pe} have {te}?", f"Number of orders with negative profit in {pe} {te}", f"How many orders lost money in {pe} {te}?"])
    return ex(q, sql, "number", None, "orders")


def average(rng, zh):
    tz, te, tc = period(rng)
    d = rng.choice(["category", "region", "channel"])
    dz, de = dim(rng, d)
    sql = f"SELECT {d}, ROUND(AVG(amount),2) AS avg_amount FROM sales{where(tc)} GROUP BY {d} ORDER BY avg_amount DESC"
    q = rng.choice([f"{tz}各{dz}的平均订单金额", f"{tz}各{dz}客单价对比", f"{tz}每个{dz}平均每单多少钱"]) if zh else rng.choice([f"Average order value by {de} {te}", f"Average order amount per {de} {te}", f"Mean order size for each {de} {te}"])
    return ex(q, sql, "bar", d, "avg_amount")


def targets(rng, zh):
    rz, re_ = rng.choice(REGIONS)
    tz, te, _ = period(rng, multi_month=True)
    # the same period on sales_targets.month
    cond = _month_cond(tz, "t.month")
    if rng.random() < 0.5:
        sql = f"SELECT t.month, t.target, ROUND(SUM(s.amount),2) AS amount FROM sales_targets t JOIN sales s ON s.region=t.region AND substr(s.order_date,1,7)=t.month WHERE t.region='{rz}' AND {cond} GROUP BY t.month, t.target ORDER BY t.month"
        q = rng.choice([f"{rz}地区{tz}每月销售额和目标对比", f"{rz}{tz}每个月实际销售额与销售目标", f"{tz}{rz}地区完成目标的情况"]) if zh else rng.choice([f"{re_} monthly sales against target {te}", f"Actual vs target sales for {re_} {te}, month by month"])
        return ex(q, sql, "table")
    sql = f"SELECT month, target FROM sales_targets WHERE region='{rz}' AND {_month_cond(tz, 'month')} ORDER BY month"
    q = rng.choice([f"{rz}地区{tz}的月度销售目标", f"{rz}{tz}每个月的销售目标是多少"]) if zh else rng.choice([f"Monthly sales targets of {re_} {te}", f"What were {re_}'s sales targets {te}, month by month?"])
    return ex(q, sql, "line", "month", "target")


def _month_cond(tz, col):
    """The sales_targets condition for a Chinese period label made by period()."""
    y = tz[:4]
    rest = tz[5:]
    if rest in ("", "全年", "度"):
        return f"substr({col},1,4)='{y}'"
    if rest.startswith("第") or rest.startswith("Q") or rest.endswith("季度"):
        qc = rest.replace("第", "").replace("季度", "").replace("Q", "")
        q = ("一二三四".index(qc) + 1) if qc in "一二三四" else int(qc)
        return f"{col} BETWEEN '{y}-{3*q-2:02d}' AND '{y}-{3*q:02d}'"
    if rest.endswith("半年"):
        return f"{col} BETWEEN '{y}-01' AND '{y}-06'" if rest[0] == "上" else f"{col} BETWEEN '{y}-07' AND '{y}-12'"
    a, b = rest.rstrip("月").replace("月到", "-").replace("至", "-").split("-")
    return f"{col} BETWEEN '{y}-{int(a):02d}' AND '{y}-{int(b):02d}'"


UNANSWERABLE = [
    ("每个员工的工资是多少?", "没有员工或工资的数据"),
    ("2019年客户的平均年龄", "没有客户年龄的数据"),
    ("华东地区仓库的库存还剩多少?", "没有库存数据"),
    ("北京2019年3月的天气怎么样", "没有天气数据"),
    ("What is our employee turnover rate?", "no employee data"),
    ("Show the stock price of the company in 2020", "no stock price data"),
    ("Which supplier delivered the most late shipments?", "no supplier or shipment data"),
    ("各门店的店长是谁?", "没有门店或店长的数据"),
    ("How many customers returned a product in 2019?", "no returns or customer data"),
    ("广告投放的点击率是多少", "没有广告数据"),
    ("各城市的房价是多少?", "没有房价数据"),
    ("2020年各地区的员工人数", "没有员工数据"),
    ("Which product has the best customer rating?", "no rating data"),
    ("各产品的进货成本是多少", "没有成本数据"),
    ("What was the weather in Shanghai in May 2019?", "no weather data"),
    ("华南地区有多少家门店?", "没有门店数据"),
    ("How many website visitors did we have in 2020?", "no website traffic data"),
    ("每个渠道的退货率", "没有退货数据"),
    ("2019年的广告费用是多少", "没有费用数据"),
    ("List our suppliers in East China", "no supplier data"),
]

# Kinds that make sense without a period, and how many all-time examples of each.
ALL_TIME_KINDS = [(total, 6), (compare, 6), (share, 5), (top, 7), (losses, 3), (average, 3)]


def tidy(q):
    """A question with its period left out: no doubled or dangling spaces, no orphaned 在."""
    q = re.sub(r"\s+", " ", q).strip()
    q = re.sub(r" ([?,])", r"\1", q)
    return q.replace("在的", "的")


def all_time_set(seen):
    global ALL_TIME
    rng = random.Random(20261129)
    out = []
    ALL_TIME = True
    try:
        for fn, n in ALL_TIME_KINDS:
            made = 0
            while made < n:
                e = fn(rng, rng.random() < 0.7)
                e["question"] = tidy(e["question"])
                if e["question"] in seen:
                    continue
                seen.add(e["question"])
                out.append(e)
                made += 1
    finally:
        ALL_TIME = False
    return out


KINDS = [(trend, 28), (total, 26), (compare, 26), (share, 20), (top, 20), (by_series, 18), (yearly, 14), (quarterly, 14), (losses, 10), (average, 10), (targets, 14)]


def train_set():
    rng = random.Random(20191205)
    out = [ex("华北地区2019年3-5月的销售额,用折线图来表示",
              "SELECT substr(order_date,1,7) AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华北' AND substr(order_date,1,7) BETWEEN '2019-03' AND '2019-05' GROUP BY month ORDER BY month",
              "line", "month", "amount")]
    seen = {out[0]["question"]}
    for fn, n in KINDS:
        made = 0
        while made < n:
            e = fn(rng, rng.random() < 0.7)
            if e["question"] in seen:
                continue
            seen.add(e["question"])
            out.append(e)
            made += 1
    for q, why in UNANSWERABLE:
        out.append(ex(q, None, error=why))
    rng.shuffle(out)
    # Added later with their own seed, at seeded places, so the examples above stay as they were.
    rng2 = random.Random(7)
    for e in all_time_set(seen):
        out.insert(rng2.randrange(len(out) + 1), e)
    return out


# The evaluation set: phrased by hand, unlike the templates above (other word orders, other
# words for the same measures, other combinations of place and period), gold SQL in house style.
M = "substr(order_date,1,7)"
EVAL = [
    ("华东地区2020年1-6月每个月的销售额,画成折线图", f"SELECT {M} AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华东' AND {M} BETWEEN '2020-01' AND '2020-06' GROUP BY month ORDER BY month", "line", "month", "amount"),
    ("看一下西南地区2018年下半年销售额的月度变化", f"SELECT {M} AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='西南' AND {M} BETWEEN '2018-07' AND '2018-12' GROUP BY month ORDER BY month", "line", "month", "amount"),
    ("广东省2019年每月利润的折线图", f"SELECT {M} AS month, ROUND(SUM(profit),2) AS profit FROM sales WHERE province='广东' AND substr(order_date,1,4)='2019' GROUP BY month ORDER BY month", "line", "month", "profit"),
    ("Line chart of monthly sales for Northwest China from June to September 2020", f"SELECT {M} AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='西北' AND {M} BETWEEN '2020-06' AND '2020-09' GROUP BY month ORDER BY month", "line", "month", "amount"),
    ("Show me how furniture sales moved each month during 2018", f"SELECT {M} AS month, ROUND(SUM(amount),2) AS amount FROM sales WHERE category='家具' AND substr(order_date,1,4)='2018' GROUP BY month ORDER BY month", "line", "month", "amount"),
    ("线上渠道2020年第三季度每月销量趋势", f"SELECT {M} AS month, SUM(quantity) AS quantity FROM sales WHERE channel='线上' AND {M} BETWEEN '2020-07' AND '2020-09' GROUP BY month ORDER BY month", "line", "month", "quantity"),
    ("2019年全年华中地区卖了多少钱?", "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华中' AND substr(order_date,1,4)='2019'", "number", None, "amount"),
    ("成都2020年上半年的总利润", f"SELECT ROUND(SUM(profit),2) AS profit FROM sales WHERE city='成都' AND {M} BETWEEN '2020-01' AND '2020-06'", "number", None, "profit"),
    ("打印机在2018年一共卖出去多少台?", "SELECT SUM(quantity) AS quantity FROM sales WHERE product='打印机' AND substr(order_date,1,4)='2018'", "number", None, "quantity"),
    ("How much revenue did South China bring in during Q4 2020?", f"SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华南' AND {M} BETWEEN '2020-10' AND '2020-12'", "number", None, "amount"),
    ("How many orders came from Zhejiang in 2019?", "SELECT COUNT(*) AS orders FROM sales WHERE province='浙江' AND substr(order_date,1,4)='2019'", "number", None, "orders"),
    ("2018年12月线下渠道的订单有几笔", "SELECT COUNT(*) AS orders FROM sales WHERE channel='线下' AND substr(order_date,1,7)='2018-12'", "number", None, "orders"),
    ("2020年哪个地区销售额最高?用柱状图比较各地区", "SELECT region, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,4)='2020' GROUP BY region ORDER BY amount DESC", "bar", "region", "amount"),
    ("比较2019年第一季度三个品类的利润", f"SELECT category, ROUND(SUM(profit),2) AS profit FROM sales WHERE {M} BETWEEN '2019-01' AND '2019-03' GROUP BY category ORDER BY profit DESC", "bar", "category", "profit"),
    ("东北三省2020年的销售额分别是多少", "SELECT province, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='东北' AND substr(order_date,1,4)='2020' GROUP BY province ORDER BY amount DESC", "bar", "province", "amount"),
    ("Bar chart comparing order counts per region in the second half of 2018", f"SELECT region, COUNT(*) AS orders FROM sales WHERE {M} BETWEEN '2018-07' AND '2018-12' GROUP BY region ORDER BY orders DESC", "bar", "region", "orders"),
    ("Online versus offline revenue in 2020, as bars", "SELECT channel, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,4)='2020' GROUP BY channel ORDER BY amount DESC", "bar", "channel", "amount"),
    ("2019年销售额的渠道占比,饼图", "SELECT channel, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,4)='2019' GROUP BY channel", "pie", "channel", "amount"),
    ("江苏2020年各类产品的销售额比例", "SELECT category, ROUND(SUM(amount),2) AS amount FROM sales WHERE province='江苏' AND substr(order_date,1,4)='2020' GROUP BY category", "pie", "category", "amount"),
    ("2018年利润在各大区之间怎么分布?用饼图", "SELECT region, ROUND(SUM(profit),2) AS profit FROM sales WHERE substr(order_date,1,4)='2018' GROUP BY region", "pie", "region", "profit"),
    ("What fraction of East China's 2019 units came from each category? Pie please", "SELECT category, SUM(quantity) AS quantity FROM sales WHERE region='华东' AND substr(order_date,1,4)='2019' GROUP BY category", "pie", "category", "quantity"),
    ("2020年卖得最好的前五个产品", "SELECT product, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,4)='2020' GROUP BY product ORDER BY amount DESC LIMIT 5", "bar", "product", "amount"),
    ("华南地区2019年利润排前三的城市", "SELECT city, ROUND(SUM(profit),2) AS profit FROM sales WHERE region='华南' AND substr(order_date,1,4)='2019' GROUP BY city ORDER BY profit DESC LIMIT 3", "bar", "city", "profit"),
    ("The 10 provinces with the most units sold in 2018", "SELECT province, SUM(quantity) AS quantity FROM sales WHERE substr(order_date,1,4)='2018' GROUP BY province ORDER BY quantity DESC LIMIT 10", "bar", "province", "quantity"),
    ("Best 3 cities for electronics revenue in the first half of 2019", f"SELECT city, ROUND(SUM(amount),2) AS amount FROM sales WHERE category='电子产品' AND {M} BETWEEN '2019-01' AND '2019-06' GROUP BY city ORDER BY amount DESC LIMIT 3", "bar", "city", "amount"),
    ("2019年每个月线上线下销售额的对比折线", f"SELECT {M} AS month, channel, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,4)='2019' GROUP BY month, channel ORDER BY month", "line", "month", "amount", "channel"),
    ("华北地区2020年三个品类每月的销售额", f"SELECT {M} AS month, category, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='华北' AND substr(order_date,1,4)='2020' GROUP BY month, category ORDER BY month", "line", "month", "amount", "category"),
    ("Each category's monthly revenue through 2018, one line per category", f"SELECT {M} AS month, category, ROUND(SUM(amount),2) AS amount FROM sales WHERE substr(order_date,1,4)='2018' GROUP BY month, category ORDER BY month", "line", "month", "amount", "category"),
    ("上海这三年每年的销售额", "SELECT substr(order_date,1,4) AS year, ROUND(SUM(amount),2) AS amount FROM sales WHERE province='上海' GROUP BY year ORDER BY year", "bar", "year", "amount"),
    ("办公椅每年的利润", "SELECT substr(order_date,1,4) AS year, ROUND(SUM(profit),2) AS profit FROM sales WHERE product='办公椅' GROUP BY year ORDER BY year", "bar", "year", "profit"),
    ("Orders per year in Central China", "SELECT substr(order_date,1,4) AS year, COUNT(*) AS orders FROM sales WHERE region='华中' GROUP BY year ORDER BY year", "bar", "year", "orders"),
    ("2020年西北地区每个季度的销售额", "SELECT (CAST(substr(order_date,6,2) AS INTEGER)+2)/3 AS quarter, ROUND(SUM(amount),2) AS amount FROM sales WHERE region='西北' AND substr(order_date,1,4)='2020' GROUP BY quarter ORDER BY quarter", "bar", "quarter", "amount"),
    ("Office supplies profit by quarter for 2019", "SELECT (CAST(substr(order_date,6,2) AS INTEGER)+2)/3 AS quarter, ROUND(SUM(profit),2) AS profit FROM sales WHERE category='办公用品' AND substr(order_date,1,4)='2019' GROUP BY quarter ORDER BY quarter", "bar", "quarter", "profit"),
    ("2020年亏钱的订单一共有多少?", "SELECT COUNT(*) AS orders FROM sales WHERE profit<0 AND substr(order_date,1,4)='2020'", "number", None, "orders"),
    ("How many orders in Shenzhen lost money in 2019?", "SELECT COUNT(*) AS orders FROM sales WHERE profit<0 AND city='深圳' AND substr(order_date,1,4)='2019'", "number", None, "orders"),
    ("2019年各地区的客单价对比", "SELECT region, ROUND(AVG(amount),2) AS avg_amount FROM sales WHERE substr(order_date,1,4)='2019' GROUP BY region ORDER BY avg_amount DESC", "bar", "region", "avg_amount"),
    ("What is the average order amount per channel in Q1 2020?", f"SELECT channel, ROUND(AVG(amount),2) AS avg_amount FROM sales WHERE {M} BETWEEN '2020-01' AND '2020-03' GROUP BY channel ORDER BY avg_amount DESC", "bar", "channel", "avg_amount"),
    ("华南地区2019年上半年每月实际销售额与目标", "SELECT t.month, t.target, ROUND(SUM(s.amount),2) AS amount FROM sales_targets t JOIN sales s ON s.region=t.region AND substr(s.order_date,1,7)=t.month WHERE t.region='华南' AND t.month BETWEEN '2019-01' AND '2019-06' GROUP BY t.month, t.target ORDER BY t.month", "table", None, None),
    ("Sales targets for Southwest China in 2020, month by month", "SELECT month, target FROM sales_targets WHERE region='西南' AND substr(month,1,4)='2020' ORDER BY month", "line", "month", "target"),
    ("东北地区2018年第四季度的销售目标", "SELECT month, target FROM sales_targets WHERE region='东北' AND month BETWEEN '2018-10' AND '2018-12' ORDER BY month", "line", "month", "target"),
    ("2018年3-5月复印纸的销量走势", f"SELECT {M} AS month, SUM(quantity) AS quantity FROM sales WHERE product='复印纸' AND {M} BETWEEN '2018-03' AND '2018-05' GROUP BY month ORDER BY month", "line", "month", "quantity"),
    ("河南2020年11月的销售额", "SELECT ROUND(SUM(amount),2) AS amount FROM sales WHERE province='河南' AND substr(order_date,1,7)='2020-11'", "number", None, "amount"),
    ("我们有多少个销售人员?", None, None, None, None, "没有销售人员的数据"),
    ("What were the marketing expenses in 2019?", None, None, None, None, "no marketing expense data"),
    ("各城市的人口是多少", None, None, None, None, "没有人口数据"),
]


def eval_set():
    out = []
    for row in EVAL:
        q, sql, kind, x, y = row[:5]
        extra = row[5] if len(row) > 5 else None
        if sql is None:
            out.append(ex(q, None, error=extra))
        else:
            out.append(ex(q, sql, kind, x, y, series=extra))
    return out


def house_style(row):
    """A year filter is written as its month range, like every other period, so the model has
    one pattern to copy from the Period hint."""
    if "sql" in row:
        row["sql"] = re.sub(r"substr\(order_date,1,4\)='(\d{4})'", r"substr(order_date,1,7) BETWEEN '\1-01' AND '\1-12'", row["sql"])
        row["sql"] = re.sub(r"substr\(((?:t\.)?month),1,4\)='(\d{4})'", r"\1 BETWEEN '\2-01' AND '\2-12'", row["sql"])
    return row


def write(name, rows):
    rows = [house_style(r) for r in rows]
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    t = train_set()
    e = eval_set()
    tq = {x["question"] for x in t}
    assert not any(x["question"] in tq for x in e)
    write("train.jsonl", t)
    write("eval.jsonl", e)
    print(f"train.jsonl: {len(t)} examples; eval.jsonl: {len(e)} questions")
