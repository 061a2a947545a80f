"""Generate the sample PDF documents in ``data/library/docs/``.

Each PDF is built from the page texts defined below, one entry per page, so the
output is reproducible and every page carries distinct text (useful for testing
page-level citations). Requires ``fpdf2``; only Latin-1 text is used because the
PDFs use the core Helvetica font.

Usage: ``python data/make_sample_pdfs.py``
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF

DOCS_DIR = Path(__file__).resolve().parent / "library" / "docs"
FIXED_DATE = dt.datetime(2024, 1, 15, 12, 0, 0, tzinfo=dt.UTC)

# A page is a list of blocks. A block starting with "# " is a heading, "## " a
# sub-heading; anything else is a body paragraph.
Page = list[str]


@dataclass(frozen=True)
class SamplePdf:
    """One PDF to generate: where it goes, its title, author and pages."""

    relpath: str
    title: str
    author: str
    pages: list[Page]


HEAT_PUMP = SamplePdf(
    relpath="home/heat-pump-manual.pdf",
    title="Aerotherm HX-300 Air-Source Heat Pump - Owner's Quick Guide",
    author="Aerotherm Heating Systems",
    pages=[
        [
            "# Aerotherm HX-300 Owner's Quick Guide",
            "## About your heat pump",
            "The HX-300 is an air-source heat pump. It extracts heat from the outside air, "
            "even on cold days down to -20 °C, and delivers it to your radiators or "
            "underfloor heating and to the hot water cylinder. It works best with low flow "
            "temperatures (35 to 50 °C), so radiators will feel warm rather than hot. This "
            "is normal: the system is designed to run for long periods at a gentle output "
            "instead of short bursts at high temperature.",
            "## The controller",
            "The wall controller has four buttons: MODE, UP, DOWN and OK. Press MODE to "
            "cycle between Heating, Hot Water, Holiday and Off. The display shows the "
            "outdoor temperature, the current flow temperature and a flame symbol when the "
            "compressor is running. A snowflake symbol means the outdoor unit is defrosting; "
            "during defrost the fan stops and some steam may rise from the unit for a few "
            "minutes. This is not a fault.",
            "## Recommended settings",
            "Leave the heating on a steady schedule rather than switching it off when you go "
            "out. A setback of 2 to 3 °C overnight saves more energy than turning the system "
            "off and reheating a cold house. Set the hot water to 50 °C, with the weekly "
            "legionella cycle (60 °C) left enabled on Sunday at 2 am.",
        ],
        [
            "# Fault codes and what to do",
            "When the HX-300 detects a problem it shows a code on the controller and the "
            "status light on the indoor unit turns red. Note the code before resetting. To "
            "reset, hold OK for five seconds. If a code returns three times within 24 hours, "
            "contact your installer.",
            "## E-1104  Outdoor temperature sensor fault",
            "The sensor reading is out of range. Check the sensor cable on the back of the "
            "outdoor unit has not been chewed or disconnected. The system runs in a fallback "
            "mode with a fixed flow temperature until it is repaired.",
            "## E-2207  Low water pressure in the heating circuit",
            "The pressure in the sealed heating system has fallen below 0.7 bar and the "
            "pump has stopped to protect itself. Look at the pressure gauge on the indoor "
            "unit. With the system cold, open both valves on the filling loop slowly until "
            "the gauge reads between 1.2 and 1.5 bar, then close both valves firmly and "
            "reset the controller. If E-2207 comes back within a few days, there is a leak "
            "somewhere: check radiator valves, the pressure relief pipe outside, and any "
            "recent plumbing work, and call your installer.",
            "## E-3150  Flow rate too low",
            "Water is not circulating fast enough. The most common cause is a blocked "
            "magnetic filter, or radiator valves that have all been closed. Open the "
            "radiator valves and clean the filter (see maintenance).",
            "## E-4402  Communication error",
            "The controller has lost contact with the indoor unit. Check the controller "
            "batteries if it is wireless, then switch the power off at the isolator for one "
            "minute and back on.",
        ],
        [
            "# Maintenance and warranty",
            "## Things you can do",
            "Keep at least 30 cm clear around the outdoor unit and 1 m in front of the fan. "
            "Brush away leaves and snow, and never cover the unit. Every three months, "
            "close the two valves either side of the magnetic filter under the indoor unit, "
            "unscrew the filter pot, lift out the magnet, wipe off the black sludge, and "
            "refit it. Check the system pressure gauge once a month; it should read between "
            "1.0 and 2.0 bar when the system is warm.",
            "## Annual service",
            "Book a service with an accredited engineer once a year, ideally before winter. "
            "The engineer checks the refrigerant circuit, the expansion vessel charge, the "
            "antifreeze concentration, electrical connections and the controller settings, "
            "and records the visit in the service log at the back of this guide.",
            "## Warranty",
            "The HX-300 carries a seven-year parts and labour warranty from the date of "
            "commissioning, provided the unit is serviced every twelve months by an "
            "accredited engineer and the service log is kept up to date. The warranty does "
            "not cover damage from frost if the system was switched off at the mains during "
            "freezing weather, or from blocked airflow around the outdoor unit.",
            "Model: HX-300.  Refrigerant: R32, 1.65 kg.  Power supply: 230 V, 16 A.",
        ],
    ],
)

LEASE = SamplePdf(
    relpath="home/lease-summary.pdf",
    title="Tenancy Agreement Summary - Flat 4, 17 Rowan Terrace",
    author="Household files",
    pages=[
        [
            "# Tenancy Agreement: Summary of Key Terms",
            "Property: Flat 4, 17 Rowan Terrace (second floor, two bedrooms, unfurnished "
            "except for white goods).",
            "Landlord: Mr. Desmond Achterberg, managed by Greystone Lettings.",
            "Tenants: the two of us, jointly and severally liable.",
            "This is our own plain-language summary of the 14-page agreement signed on "
            "28 July 2023. Where this summary and the agreement disagree, the agreement wins.",
            "## Term and rent",
            "The tenancy is an assured shorthold tenancy for a fixed term of 12 months from "
            "1 August 2023, continuing afterwards month to month unless renewed. Rent is "
            "£1,150 per calendar month, payable by standing order on the 1st of each month "
            "to the agent's client account. The landlord may propose an increase once a year "
            "with at least one month's written notice.",
            "## Deposit",
            "A deposit of £1,326 (five weeks' rent) was paid and is protected in a "
            "government-approved deposit scheme. The certificate is in the blue folder. At "
            "the end of the tenancy the deposit is returned within ten days of agreeing any "
            "deductions, which are limited to damage beyond fair wear and tear, unpaid rent "
            "and missing items from the inventory.",
        ],
        [
            "# Ending the tenancy",
            "## Giving notice as tenants",
            "During the fixed term we cannot leave early except under the break clause. "
            "The break clause allows either side to end the tenancy after the first six "
            "months. After that, on the rolling monthly basis, we must tell the landlord in "
            "writing (email to the agent counts) at least two months before the day we "
            "intend to move out, and the notice must end on the last day of a rental period. "
            "Example: to vacate on 31 October, the notice must reach the agent by 31 August.",
            "## Notice from the landlord",
            "The landlord must give us at least two months' notice using the correct "
            "statutory form, and cannot ask us to vacate during the first six months.",
            "## Moving out",
            "Leave the flat clean, including the oven, and in the condition shown in the "
            "check-in inventory. Return all keys and fobs (three sets) to the agent. A "
            "check-out inspection will be booked during the final week; we should attend.",
            "## Renewal",
            "If both sides want to continue, the agent will send a renewal agreement about "
            "eight weeks before the fixed term ends. There is no fee for renewal.",
        ],
        [
            "# Living in the flat",
            "## Repairs",
            "The landlord is responsible for the structure and exterior, the boiler, "
            "heating, plumbing, wiring and the supplied appliances. Report repairs to the "
            "agent in writing. Emergencies (no heating in winter, major leaks, no power) go "
            "to the agent's out-of-hours line. We are responsible for minor maintenance "
            "such as changing light bulbs and smoke-alarm batteries, and for damage we cause.",
            "## Pets, smoking and subletting",
            "One cat is allowed, by written consent dated 3 August 2023, on condition that "
            "the carpets are professionally cleaned at the end of the tenancy. No smoking "
            "inside the property. Subletting or taking in a lodger is not allowed without "
            "the landlord's written permission.",
            "## Bills",
            "We pay council tax, gas, electricity, water, broadband and the TV licence. "
            "Meter readings were taken at check-in and are noted in the inventory.",
            "## Access",
            "The landlord or agent must give at least 24 hours' written notice before "
            "visiting, except in an emergency. Annual gas safety checks are arranged by the "
            "agent.",
        ],
    ],
)

SAILING = SamplePdf(
    relpath="hobbies/sailing-course-notes.pdf",
    title="Dinghy Sailing Course - Notes from the Weekend",
    author="Course notes",
    pages=[
        [
            "# Dinghy Sailing Course: Part 1 - Basics",
            "## Points of sail",
            "No boat can sail straight into the wind. About 45 degrees either side of the "
            "wind is the no-go zone, where the sails flap and the boat stops. Close-hauled "
            "is as close to the wind as you can sail, with sails pulled in tight. Beam reach "
            "is with the wind directly across the boat, usually the fastest point of sail. "
            "Broad reach has the wind coming from behind the beam, and a run has it directly "
            "behind, with the sails let right out.",
            "## Tacking and gybing",
            "To change direction through the wind (tacking), call 'ready about', push the "
            "tiller away, cross the boat facing forward as the boom comes over, and settle "
            "on the new side. Gybing turns the stern through the wind; the boom crosses "
            "quickly and with force, so it must be controlled and everyone must keep their "
            "heads down.",
            "## Knots we practised",
            "Figure of eight (stopper knot at the end of the sheets), bowline (a fixed loop "
            "that will not slip and is easy to undo), reef knot (joining two ends of the same "
            "rope), round turn and two half hitches (tying to a ring or post), and a clove "
            "hitch (quick, but can slip).",
        ],
        [
            "# Part 2 - Rules of the road",
            "These are the rules for avoiding collisions between vessels. The boat that "
            "must keep clear is the give-way vessel; the other is the stand-on vessel, which "
            "should hold its course and speed so its behaviour is predictable.",
            "## Two sailing vessels meeting",
            "1. When they are on opposite tacks, the boat on port tack (wind coming over its "
            "left side, boom out to starboard) keeps clear of the boat on starboard tack. "
            "Mnemonic from our instructor: 'port gives way'.",
            "2. When they are on the same tack, the windward boat keeps clear of the leeward boat.",
            "3. If a boat on port tack cannot tell which tack the other is on, it should "
            "assume it must keep clear.",
            "## Other situations",
            "Any boat overtaking another keeps clear, whether under sail or power, until "
            "well past. A powered vessel normally gives way to a sailing vessel, but not a "
            "large ship in a narrow channel that can only navigate within it, nor a vessel "
            "that is fishing with nets or restricted in its ability to manoeuvre. A small "
            "dinghy should always keep out of the way of big ships: they cannot stop or turn "
            "quickly and may not see you at all.",
            "## Act early",
            "When giving way, make a big, obvious alteration in good time, preferably "
            "passing behind the other boat, so the other skipper can see what you intend.",
        ],
        [
            "# Part 3 - Weather and safety",
            "## Checking the forecast",
            "Always check the inshore forecast before going out and note the tide times. "
            "For beginners in small dinghies, Force 3 (gentle breeze, 7 to 10 knots) is "
            "plenty; above Force 4 the course does not go out. Look for gusts as dark "
            "patches moving across the water.",
            "## Reefing and depowering",
            "If the boat heels too far, ease the mainsheet first. Hike out to balance. If it "
            "stays overpowered, head back to shore and reef the main before going out again.",
            "## Capsize recovery",
            "Stay with the boat; it floats and is easier to see than a swimmer. Check "
            "everyone is accounted for. Swim round to the centreboard, make sure the "
            "mainsheet is free, then stand on the board and lean back while holding a "
            "jib sheet. As the boat comes up, the crew is scooped into it.",
            "## Person overboard",
            "Shout, point and keep pointing at the person in the water. Sail away on a beam "
            "reach for a few boat lengths, tack, then come back on a close reach so you can "
            "slow down by letting the sails flap, stopping with the person beside the "
            "windward shroud.",
        ],
    ],
)

FIRST_AID = SamplePdf(
    relpath="notes/first-aid.pdf",
    title="First Aid Notes - Workplace Course Summary",
    author="Course participant",
    pages=[
        [
            "# First Aid Notes 1: Priorities and bleeding",
            "These notes summarise a one-day workplace first aid course. They are a memory "
            "aid, not a substitute for training. In an emergency, call the emergency number "
            "(999 or 112) early.",
            "## Primary survey: DRSABC",
            "Danger: make sure you and bystanders are safe before approaching. "
            "Response: speak loudly and tap the shoulders. "
            "Shout for help. "
            "Airway: tilt the head back and lift the chin. "
            "Breathing: look, listen and feel for up to ten seconds. "
            "Circulation: if the casualty is unresponsive and not breathing normally, call "
            "for an ambulance and an AED and start CPR: 30 chest compressions, 5 to 6 cm "
            "deep at 100 to 120 per minute, then 2 rescue breaths, and repeat.",
            "## Severe bleeding",
            "Put on gloves if available. Press firmly on the wound with a clean pad or "
            "your hand, and keep pressing. Help the casualty to lie down. If blood soaks "
            "through, add another pad on top rather than removing the first. Once "
            "controlled, secure the pad with a firm bandage, checking circulation beyond it. "
            "Watch for signs of shock: pale, cold, clammy skin, a fast weak pulse and "
            "rapid breathing. Keep the casualty warm and lying down with legs raised if "
            "no injury prevents it.",
        ],
        [
            "# First Aid Notes 2: Blocked airway",
            "## Recognising it",
            "An adult with a partly blocked airway can usually still cough, speak and "
            "breathe. Encourage them to keep coughing; do not slap their back yet. A "
            "severe blockage is different: the person cannot speak, cough or breathe, may "
            "clutch at their throat, and may start to turn blue around the lips.",
            "## Adults and children over one year",
            "1. Stand behind and slightly to the side, support their chest with one hand "
            "and lean them well forward.",
            "2. Give up to five sharp back blows between the shoulder blades with the heel "
            "of your hand, checking after each one whether the obstruction has cleared.",
            "3. If not, give up to five abdominal thrusts: stand behind, put your arms "
            "around their waist, place a clenched fist between the navel and the bottom of "
            "the breastbone, grasp it with the other hand and pull sharply inwards and "
            "upwards.",
            "4. Repeat the cycle of five back blows and five abdominal thrusts. Call the "
            "emergency number if it has not cleared after three cycles.",
            "5. If they become unresponsive, lower them to the ground, call for an "
            "ambulance and begin CPR.",
            "Anyone who has had abdominal thrusts must be seen by a doctor afterwards, "
            "because of the risk of internal injury.",
            "## Babies under one year",
            "Lay the baby face down along your forearm, head low, and give up to five back "
            "blows. Then turn them face up and give up to five chest thrusts with two "
            "fingers in the middle of the chest. Never use abdominal thrusts on a baby.",
        ],
        [
            "# First Aid Notes 3: Burns and scalds",
            "## Cool the burn",
            "Cool the area under cool or lukewarm running water for at least 20 minutes, "
            "as soon as possible. Do not use ice, iced water, butter, creams or toothpaste. "
            "Remove watches, rings and clothing near the burn unless stuck to it, because "
            "the area will swell.",
            "## Cover it",
            "After cooling, cover the burn loosely with a layer of cling film laid along "
            "it (not wrapped around a limb) or a clean plastic bag for a hand. This keeps "
            "the wound clean and reduces pain. Do not burst blisters.",
            "## When to get medical help",
            "Seek medical advice for any burn larger than the casualty's palm, burns to "
            "the face, hands, feet or genitals, burns that go all the way round a limb, "
            "deep burns that look white, waxy or charred (these may be painless), any "
            "electrical or chemical burn, and burns in babies, young children or the "
            "elderly.",
            "## Chemical burns",
            "Wear gloves. Brush off any powder, then flood with running water for at least "
            "20 minutes, making sure the run-off does not flow onto unaffected skin. Note "
            "the name of the chemical for the paramedics.",
            "A minor burn, smaller than a coin and red without blisters, can be managed at "
            "home after cooling: cover it and take over-the-counter pain relief if needed.",
        ],
        [
            "# First Aid Notes 4: Sprains, fractures and the kit",
            "## Sprains and strains",
            "Rest the injured part, apply an ice pack wrapped in a cloth for up to 20 "
            "minutes, provide comfortable support, and raise the limb. If in doubt about "
            "whether it is a fracture, treat it as one.",
            "## Suspected fractures",
            "Signs include severe pain, swelling, deformity, an inability to move or bear "
            "weight, and a grating feeling. Keep the casualty still and support the injury "
            "in the position found, using padding or their own hand. Do not try to "
            "straighten it. For an open fracture, cover the wound with a sterile dressing "
            "and pad around the bone end. Call an ambulance for leg fractures; arm "
            "fractures can often go to hospital by car once supported in a sling.",
            "## Contents of the office kit (checked monthly)",
            "Sterile dressings in three sizes, triangular bandages, assorted plasters, "
            "eye pads, disposable gloves, a face shield for rescue breaths, foil blanket, "
            "tough-cut scissors, cling film, alcohol-free wipes, and the accident book. The "
            "AED is on the wall by the ground-floor lifts; its pads were replaced in "
            "January.",
        ],
    ],
)

ONBOARDING = SamplePdf(
    relpath="work/onboarding-handbook.pdf",
    title="Fernhill Analytics - New Starter Handbook",
    author="Fernhill Analytics People Team",
    pages=[
        [
            "# Welcome to Fernhill Analytics",
            "This handbook covers your first weeks with us. Keep it handy; most questions "
            "new starters ask in their first month are answered here.",
            "## Your first day",
            "Arrive at 9:30 at reception on the ground floor of Mercer House. Your manager "
            "will meet you there. Bring photo ID and your bank details for payroll if you "
            "have not sent them already. In the morning you will collect your laptop and "
            "building pass, and in the afternoon you will have a welcome session with the "
            "People Team, including a tour of the building and fire safety briefing.",
            "## Building access",
            "Your pass opens the main door and the floors your team works on. The office "
            "is open from 7 am to 8 pm on weekdays. If you lose your pass, report it to "
            "reception the same day so it can be cancelled. Visitors must be signed in at "
            "reception and accompanied at all times.",
            "## Your buddy",
            "Every new starter is paired with a buddy from another team for the first three "
            "months. Your buddy is your first port of call for the questions you might not "
            "want to ask your manager, such as where the good coffee is.",
        ],
        [
            "# IT and security",
            "## Laptop and accounts",
            "Your laptop is encrypted and managed centrally. Sign in with the temporary "
            "password in your welcome email, then set a passphrase of at least 14 "
            "characters and enrol in multi-factor authentication using the authenticator "
            "app. Never share your passphrase, including with IT staff.",
            "## Working remotely",
            "Connect to the company VPN before accessing internal systems from outside the "
            "office. Avoid public computers. Lock your screen whenever you step away "
            "(Windows key + L, or Ctrl + Cmd + Q on a Mac).",
            "## Getting help",
            "The IT service desk is on extension 4471, or raise a ticket through the "
            "intranet. Report suspected phishing emails with the Report button in your "
            "mail client; you will never get in trouble for reporting something that turns "
            "out to be harmless.",
            "## Data handling",
            "Client data must stay on company systems. Do not copy it to personal devices "
            "or personal cloud storage. Anything marked Confidential must not be printed "
            "outside the office.",
        ],
        [
            "# Expenses, leave and pay",
            "## Claiming expenses",
            "Claim business expenses such as travel to client sites, hotel stays and "
            "approved training using form HR-17 (Expense Claim), available on the intranet "
            "under People > Forms. Attach an itemised receipt for every item over £5. "
            "Submit the form to your manager for approval within 30 days of spending the "
            "money; claims older than 90 days will not be paid. Approved claims are paid "
            "with the next monthly salary. Mileage in your own car is paid at the rate "
            "shown on the form. Alcohol is not reimbursed.",
            "## Annual leave",
            "Full-time staff have 25 days of annual leave plus public holidays, rising by "
            "one day for each full year of service up to 30 days. Book leave in the HR "
            "system at least two weeks ahead for anything longer than two days. Up to five "
            "unused days can be carried into the next year.",
            "## Sickness",
            "If you are unwell, tell your manager by phone or message before 10 am. For "
            "absences longer than seven calendar days, a doctor's note is required.",
            "## Pay",
            "Salaries are paid on the 25th of each month, or the last working day before it. "
            "Payslips are available in the HR system.",
        ],
    ],
)

SAMPLES: list[SamplePdf] = [HEAT_PUMP, LEASE, SAILING, FIRST_AID, ONBOARDING]


class _SamplePdfDoc(FPDF):
    """FPDF with a simple running header and a 'Page N of M' footer."""

    def __init__(self, running_title: str) -> None:
        super().__init__(format="A4")
        self._running_title = running_title

    def header(self) -> None:
        self.set_font("Helvetica", "I", 8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 8, self._running_title, align="R", new_x="LMARGIN", new_y="NEXT")
        self.ln(2)
        self.set_text_color(0, 0, 0)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", "I", 8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 10, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def render(sample: SamplePdf, out_path: Path) -> None:
    """Write ``sample`` to ``out_path``, one PDF page per entry in ``sample.pages``."""
    pdf = _SamplePdfDoc(sample.title)
    pdf.set_title(sample.title)
    pdf.set_author(sample.author)
    pdf.set_creator("data/make_sample_pdfs.py")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_margins(20, 15, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    for page in sample.pages:
        pdf.add_page()
        for block in page:
            if block.startswith("# "):
                pdf.set_font("Helvetica", "B", 16)
                pdf.multi_cell(0, 9, block[2:], new_x="LMARGIN", new_y="NEXT")
                pdf.ln(3)
            elif block.startswith("## "):
                pdf.ln(2)
                pdf.set_font("Helvetica", "B", 12)
                pdf.multi_cell(0, 7, block[3:], new_x="LMARGIN", new_y="NEXT")
            else:
                pdf.set_font("Helvetica", "", 10.5)
                pdf.multi_cell(0, 5.5, block, new_x="LMARGIN", new_y="NEXT")
                pdf.ln(2)
    if pdf.page_no() != len(sample.pages):
        raise RuntimeError(
            f"{sample.relpath}: text overflowed to {pdf.page_no()} pages, "
            f"expected {len(sample.pages)}; shorten a page"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out_path))


def main() -> None:
    """Render every sample PDF into ``data/library/docs``."""
    for sample in SAMPLES:
        out_path = DOCS_DIR / sample.relpath
        render(sample, out_path)
        print(f"wrote {out_path.relative_to(DOCS_DIR.parent)} ({len(sample.pages)} pages)")


if __name__ == "__main__":
    main()
