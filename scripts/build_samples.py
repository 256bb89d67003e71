"""Build the demo documents in data/samples/ from the text in this file.

员工手册.pdf: the employee handbook, one chapter a page, written with python-docx and printed to
PDF by LibreOffice (`soffice --headless`) with an embedded CJK font, so the PDF has a real text
layer, bookmarks and a running footer. 差旅与报销制度.docx: the travel and expense policy,
written with python-docx. The two share no passage: the quickstart ingests the whole folder into
one knowledge base, and duplicate text would crowd retrieval.

All text is original to this project and dedicated to the public domain (data/samples/LICENSE).
Usage: .venv/bin/python scripts/build_samples.py  (needs LibreOffice and a CJK font).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import tempfile
from pathlib import Path

import docx
from docx.document import Document
from docx.enum.text import WD_BREAK
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Pt

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
# A fixed date keeps rebuilt files identical where the tools allow it.
STAMP = dt.datetime(2025, 1, 6, 9, 0, 0)
CJK_FONT = "WenQuanYi Micro Hei"

# A section is (title, body); a body item is a paragraph, ("list", [items]) or
# ("table", [header, *rows]).
Item = str | tuple[str, list[str]] | tuple[str, list[list[str]]]
Section = tuple[str, list[Item]]
Chapter = tuple[str, list[Item], list[Section]]

HANDBOOK_TITLE = "星河云科技员工手册"
HANDBOOK_FOOTER = "星河云科技员工手册（2025 年版）"
HANDBOOK: list[Chapter] = [
    (
        "前言",
        [
            "欢迎加入星河云科技。本手册说明公司的基本制度和日常工作中最常用的规定，"
            "适用于与公司签订劳动合同的全体员工，实习生和外包人员参照执行。",
            "本手册由人力资源部编写和解释，每年一月修订一次。手册与国家法律法规不一致的，以法律法规为准；"
            "各部门的专项制度与本手册不一致的，以专项制度为准。差旅和费用报销的具体标准见《差旅与报销制度》。",
            "如对本手册有疑问，请联系人力资源部（分机 8001，邮箱 hr@xinghe.example）。",
        ],
        [],
    ),
    (
        "第一章 工作时间与考勤",
        [],
        [
            (
                "1.1 标准工时与弹性工作",
                [
                    "公司实行每周五天、每天八小时的标准工时制度。研发、产品和设计岗位可申请弹性工作，"
                    "核心在岗时间为每个工作日上午十点至下午四点，其余时间由员工与直属主管商定。",
                    "午休时间为中午十二点至下午一点，不计入工作时长。",
                ],
            ),
            (
                "1.2 打卡与迟到",
                [
                    "员工上下班须在公司门禁或移动办公应用中打卡。因外出拜访客户等原因无法打卡的，"
                    "应在当天内补录外勤记录，并注明事由。",
                    "晚于核心时间开始到岗即为迟到。每月累计迟到三次以上的，由直属主管进行面谈并记录。",
                ],
            ),
            (
                "1.3 加班",
                [
                    "加班须事先经直属主管在系统中确认。工作日加班优先安排调休，调休须在加班后六个月内使用；"
                    "法定节假日加班按国家规定支付加班工资。",
                ],
            ),
            (
                "1.4 远程办公",
                [
                    "经部门负责人同意，员工每周最多可远程办公两天。远程办公期间须保持即时通讯在线，"
                    "并遵守第五章的信息安全规定，不得在公共场所处理保密级别的资料。",
                ],
            ),
        ],
    ),
    (
        "第二章 假期",
        [
            "各类假期均须在人事系统中提前申请，经审批后生效。未经批准擅自不到岗的，按旷工处理。",
        ],
        [
            (
                "2.1 法定节假日",
                [
                    "公司按国务院公布的当年放假安排执行元旦、春节、清明节、劳动节、端午节、中秋节和国庆节等法定节假日。",
                ],
            ),
            (
                "2.2 年假",
                [
                    "带薪年假的天数按员工在本公司的工龄确定：入职满一年的员工，每年享有十天带薪年假；"
                    "入职满五年的员工，每年享有十五天带薪年假。入职当年的年假天数按在职月数折算，不足一天的部分不计。",
                ],
            ),
            (
                "2.3 年假的申请与顺延",
                [
                    "年假须至少提前三个工作日申请，连续休假超过五天的须提前两周申请。"
                    "当年未休完的年假可顺延至次年三月三十一日，逾期作废，不折算为工资。",
                ],
            ),
            (
                "2.3 病假",
                [
                    "员工因病不能上班的，应在当天上午十点前告知直属主管。连续病假超过两天的，"
                    "须在返岗后三个工作日内提交医院出具的诊断证明。每年前五天病假工资全额发放，"
                    "其后按当地规定的病假工资标准发放。",
                ],
            ),
            (
                "2.4 婚假、产假与陪产假",
                [
                    (
                        "list",
                        [
                            "婚假：依法登记结婚的员工享有婚假三天，并可按当地规定享受延长婚假。",
                            "产假：女员工生育享有国家规定的九十八天产假，以及当地规定的延长产假。",
                            "陪产假：男员工在配偶生育期间享有十五天陪产假，须在孩子出生后六个月内休完。",
                        ],
                    ),
                ],
            ),
            (
                "2.5 事假与丧假",
                [
                    "事假为无薪假，每次不超过三天，全年累计不超过十天。员工的直系亲属去世时，"
                    "可享有三天带薪丧假。",
                ],
            ),
        ],
    ),
    (
        "第三章 薪酬与福利",
        [],
        [
            (
                "3.1 工资发放",
                [
                    "工资按月发放，每月十日发放上一个自然月的工资，遇节假日提前到最近的工作日。"
                    "工资条通过人事系统查看，对金额有疑问的，请在发放后十五日内联系人力资源部核对。",
                ],
            ),
            (
                "3.2 社会保险与住房公积金",
                [
                    "公司自员工入职当月起，为其缴纳养老、医疗、失业、工伤和生育保险以及住房公积金，"
                    "缴费基数按员工上一年度月平均工资确定，并在每年七月调整。",
                ],
            ),
            (
                "3.3 补充福利",
                [
                    (
                        "list",
                        [
                            "每年一次免费体检，可在公司签约的三家体检机构中任选一家。",
                            "工作日午餐补贴每天三十元，随工资发放。",
                            "补充商业医疗保险覆盖员工本人，员工子女可按团体价格自愿加保。",
                            "每年一千五百元的学习基金，用于购买专业书籍和参加外部课程。",
                        ],
                    ),
                ],
            ),
        ],
    ),
    (
        "第四章 费用报销总则",
        [
            "本章说明日常费用报销的通用规则。出差相关的交通、住宿标准和补贴，请查阅《差旅与报销制度》。",
        ],
        [
            (
                "4.1 报销流程",
                [
                    "员工在费用系统中填写报销单，上传发票照片，提交直属主管审批；金额超过五千元的，"
                    "还须部门负责人审批。财务部审核通过后，款项在五个工作日内转入员工工资卡。",
                ],
            ),
            (
                "4.2 办公用品与软件",
                [
                    "单价低于五百元的办公用品可由员工自行购买后报销；单价五百元及以上的，须先经行政部审批。"
                    "工作需要的软件订阅须由信息技术部统一采购，个人购买的软件不予报销。",
                ],
            ),
            (
                "4.3 业务招待",
                [
                    "招待客户须事先报批，人均标准不超过三百元。报销时须写明客户单位、人数和事由，并附消费明细。",
                ],
            ),
        ],
    ),
    (
        "第五章 信息安全",
        [],
        [
            (
                "5.1 账号与密码",
                [
                    "公司账号仅限本人使用，不得转借。密码长度不少于十二位，须开启两步验证；"
                    "怀疑密码泄露时，应立即修改密码并报告信息安全组。",
                ],
            ),
            (
                "5.2 设备与数据",
                [
                    "办公电脑必须开启全盘加密和五分钟自动锁屏。公司资料分为公开、内部和保密三级，"
                    "保密资料不得存放在个人设备上，也不得上传到未经批准的网盘或聊天工具。",
                ],
            ),
            (
                "5.3 可疑邮件",
                [
                    "收到要求提供密码、转账或点击陌生链接的邮件时，不要回复或打开附件，"
                    "请将邮件转发至 security@xinghe.example 后删除。"
                    "信息安全组会在一个工作日内答复。",
                ],
            ),
            (
                "5.4 离职交接",
                [
                    "员工离职前须归还电脑、门禁卡等公司财产，并在最后工作日前完成工作资料的移交。"
                    "账号在最后工作日下班后停用。",
                ],
            ),
        ],
    ),
    (
        "第六章 培训、考核与离职",
        [],
        [
            (
                "6.1 入职培训与试用期",
                [
                    "新员工须在入职第一周内完成入职培训和信息安全课程。试用期一般为三个月，"
                    "试用期结束前两周由直属主管组织转正评估。",
                ],
            ),
            (
                "6.2 绩效考核",
                [
                    "公司每半年进行一次绩效考核，考核结果分为优秀、良好、合格和待改进四档，"
                    "作为调薪、晋升和年终奖的主要依据。",
                ],
            ),
            (
                "6.3 离职",
                [
                    "员工主动离职的，试用期内须提前三天、转正后须提前三十天以书面形式提出。"
                    "人力资源部在最后工作日出具离职证明，并结清当月工资和未休年假的折算工资。",
                ],
            ),
        ],
    ),
]

TRAVEL_TITLE = "差旅与报销制度"
TRAVEL: list[Section] = [
    (
        "一、适用范围",
        [
            "本制度适用于员工因公出差发生的交通、住宿、伙食和市内交通费用。出差是指离开常驻城市、"
            "前往其他城市开展工作的情形；同城外出不属于出差，相关费用按日常费用处理。",
        ],
    ),
    (
        "二、出差申请",
        [
            "出差前须在费用系统中提交出差申请，写明目的地、日期和预计费用，经直属主管批准后方可预订行程。"
            "未经批准的出差，费用不予报销。出差计划变更的，应在出发前更新申请。",
            "机票和酒店原则上通过公司签约的差旅平台预订，由公司统一结算，员工无须垫付。",
        ],
    ),
    (
        "三、交通标准",
        [
            (
                "list",
                [
                    "飞机：乘坐经济舱；单程飞行时间超过六小时的，经部门负责人批准可乘坐超级经济舱。",
                    "火车：高铁和动车乘坐二等座，夜间普通列车可乘坐软卧。",
                    "单程四小时以内可到达的城市，优先乘坐火车。",
                    "因个人原因改签或退票产生的费用，由员工自行承担。",
                ],
            ),
        ],
    ),
    (
        "四、住宿标准",
        [
            "住宿费按城市类别设定每晚上限，凭发票在上限内实报实销。两名同性别员工同行的，原则上合住一间。",
            (
                "table",
                [
                    ["城市类别", "城市举例", "每晚上限（元）"],
                    ["一类城市", "北京、上海、广州、深圳", "650"],
                    ["二类城市", "杭州、南京、成都、武汉等省会城市", "480"],
                    ["其他城市", "以上以外的城市", "380"],
                ],
            ),
        ],
    ),
    (
        "五、伙食补贴与市内交通",
        [
            "出差期间按自然日发放伙食补贴，每天一百元，无须发票；当天往返的出差按半天计算。"
            "客户或会议主办方已提供餐食的，相应餐次不再补贴。",
            "出差地的市内交通优先乘坐地铁和公交；打车费用凭行程单报销，每天不超过一百五十元。",
        ],
    ),
    (
        "六、借款与报销时限",
        [
            "预计自付费用超过三千元的，可在出发前申请差旅借款，借款须在返回后报销时冲抵。",
            "差旅费用须在出差结束后十五个工作日内提交报销，逾期提交的须由部门负责人说明原因；"
            "超过九十天的，不再受理。报销时须附出差申请、发票和行程单，电子发票须上传原始文件。",
        ],
    ),
    (
        "七、违规处理",
        [
            "虚报、重复报销或使用与行程不符的票据的，公司将追回款项，并视情节给予警告直至解除劳动合同。",
        ],
    ),
]


def _cjk_styles(document: Document, size: float) -> None:
    """Every style in the CJK font: LibreOffice would otherwise fall back to whatever it has."""
    for style in document.styles:
        if not hasattr(style, "font") or style.font is None:
            continue
        style.font.name = CJK_FONT
        rpr = style.element.get_or_add_rPr()
        fonts = rpr.find(qn("w:rFonts"))
        if fonts is None:
            fonts = OxmlElement("w:rFonts")
            rpr.append(fonts)
        for attr in ("w:ascii", "w:hAnsi", "w:eastAsia", "w:cs"):
            fonts.set(qn(attr), CJK_FONT)
    document.styles["Normal"].font.size = Pt(size)


def _page_footer(document: Document, text: str) -> None:
    """'<text> · 第 N 页' in the footer: the running line a real handbook prints."""
    para = document.sections[0].footer.paragraphs[0]
    para.text = f"{text} · 第 "
    field = OxmlElement("w:fldSimple")
    field.set(qn("w:instr"), "PAGE")
    run = OxmlElement("w:r")
    t = OxmlElement("w:t")
    t.text = "1"
    run.append(t)
    field.append(run)
    para._p.append(field)
    para.add_run(" 页")


def _body(document: Document, items: list[Item]) -> None:
    for item in items:
        if isinstance(item, str):
            document.add_paragraph(item)
        elif item[0] == "list":
            # Numbered as Chinese policies number them, in the text itself: a Word bullet
            # is a Symbol-font glyph that PDF text extraction turns into a private-use character.
            for n, entry in enumerate(item[1], 1):
                document.add_paragraph(f"（{n}）{entry}")
        else:
            rows = item[1]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            table.style = "Table Grid"
            for cells, row in zip(table.rows, rows, strict=True):
                for cell, value in zip(cells.cells, row, strict=True):
                    cell.text = str(value)


def _metadata(document: Document, title: str) -> None:
    props = document.core_properties
    props.title = title
    props.author = "星河云科技人力资源部"
    props.created = props.modified = STAMP
    props.last_modified_by = props.author
    props.revision = 1


def handbook_docx(path: Path) -> None:
    document = docx.Document()
    _cjk_styles(document, 11)
    _metadata(document, HANDBOOK_TITLE)
    _page_footer(document, HANDBOOK_FOOTER)
    document.add_heading(HANDBOOK_TITLE, level=0)
    for number, (title, intro, sections) in enumerate(HANDBOOK):
        if number:  # one chapter a page: citations then name a page a reader can find
            document.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
        document.add_heading(title, level=1)
        _body(document, intro)
        for heading, body in sections:
            document.add_heading(heading, level=2)
            _body(document, body)
    document.save(str(path))


def travel_docx(path: Path) -> None:
    document = docx.Document()
    _cjk_styles(document, 11)
    _metadata(document, TRAVEL_TITLE)
    document.add_heading(f"星河云科技{TRAVEL_TITLE}", level=0)
    document.add_paragraph("本制度自 2025 年 1 月 1 日起施行，由财务部负责解释。")
    for heading, body in TRAVEL:
        document.add_heading(heading, level=1)
        _body(document, body)
    document.save(str(path))


def to_pdf(source: Path, out_dir: Path) -> Path:
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        raise SystemExit("LibreOffice is needed for the PDF: apt-get install libreoffice-writer")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                soffice,
                f"-env:UserInstallation=file://{profile}",
                "--headless",
                "--convert-to",
                'pdf:writer_pdf_Export:{"ExportBookmarks":{"type":"boolean","value":"true"}}',
                "--outdir",
                str(out_dir),
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return out_dir / f"{source.stem}.pdf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLES, help="where the files go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "员工手册.docx"
        handbook_docx(source)
        shutil.move(to_pdf(source, Path(tmp)), args.out / "员工手册.pdf")
    travel_docx(args.out / f"{TRAVEL_TITLE}.docx")
    print(f"wrote {args.out / '员工手册.pdf'} and {args.out / (TRAVEL_TITLE + '.docx')}")


if __name__ == "__main__":
    main()
