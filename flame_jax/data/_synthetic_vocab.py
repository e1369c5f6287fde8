"""Clinical building blocks of the synthetic cohort: drug classes, ward drugs, diseases, procedures.

Everything here is static data read by :mod:`flame_jax.data._synthetic`; nothing is random. The
catalogues are ordered by inclusion priority: a cohort with few drugs or codes takes entries from
the front, so that even the smallest configuration has classes that interact, companions, an age
rule and a contraindication.

Codes and titles follow ICD-9-CM (diagnoses: no dot, "4019", "25000", "V5861"; procedures: "3893",
"0066"), which is in the public domain. Drug names of the therapeutic classes are invented: a
random prefix followed by the class's real naming stem ("-pril", "-olol", ...), so a reader (or a
language model) recognises the class but no name claims a real product's pharmacology. The ward
drugs (saline, electrolytes, acetaminophen, ...) carry their real generic names and structures.
SMILES of the invented drugs are a class scaffold with two substituent slots ``{a}`` and ``{b}``;
each slot takes a branch such as ``(F)`` or nothing (hydrogen). The generator verifies every
resulting SMILES with RDKit.
"""

import re
from typing import NamedTuple

__all__ = [
    "ADMISSION_LOCATIONS",
    "ADMISSION_TYPES",
    "AGE_RULES",
    "BASE_DILUENTS",
    "BRAND_ENDINGS",
    "CEF_ENDINGS",
    "CLASSES",
    "CLASS_INTERACTIONS",
    "CONTRAINDICATIONS",
    "DDI_KINDS",
    "DISCHARGE_LOCATIONS",
    "DISEASES",
    "ELECTIVE_LOCATION",
    "INSURANCES",
    "NDC_LABELERS",
    "NOISE_DIAGNOSES",
    "NOISE_PROCEDURE_ACTIONS",
    "NOISE_PROCEDURE_APPROACHES",
    "NOISE_PROCEDURE_SITES",
    "ONSETS",
    "PATIENT_ATTRIBUTES",
    "PROCEDURES",
    "SUBSTITUENTS",
    "SYNTHETIC_DIAG_FINDINGS",
    "SYNTHETIC_DIAG_QUALIFIERS",
    "SYNTHETIC_DIAG_SITES",
    "SYNTHETIC_DIAG_SUFFIXES",
    "VOWELS",
    "WARD_DRUGS",
    "ClassSpec",
    "DiseaseSpec",
    "ProcedureSpec",
    "WardDrugSpec",
    "short_title",
]


class ClassSpec(NamedTuple):
    """A therapeutic drug class.

    ``stem`` is appended to an invented prefix (or, for ``prefix=True``, prepended to an invented
    ending, as with the cephalosporins' "cef-"). ``priority``: lower is kept when two indicated
    drugs interact (the other one is swapped or dropped). ``companions``: class keys or ward drug
    names prescribed together with any member of this class.
    """

    key: str
    name: str
    stem: str
    scaffold: str
    priority: int
    route: str
    form: str
    form_unit: str
    dose_unit: str
    strengths: tuple[str, ...]
    companions: tuple[str, ...] = ()
    prefix: bool = False


class WardDrugSpec(NamedTuple):
    """A background ward drug, given independently of the diagnoses with probability ``prob``."""

    name: str
    smiles: str
    prob: float
    route: str
    form: str
    form_unit: str
    dose_unit: str
    strengths: tuple[str, ...]
    synonyms: tuple[str, ...] = ()


class DiseaseSpec(NamedTuple):
    """A latent disease: its codes (code, long title), the classes it indicates, its procedures."""

    name: str
    chronic: bool
    prevalence: float
    primary: tuple[str, str]
    secondary: tuple[tuple[str, str], ...]
    classes: tuple[str, ...]
    procedures: tuple[tuple[str, float], ...] = ()


class ProcedureSpec(NamedTuple):
    """An ICD-9-CM procedure; ``weight`` is its frequency as an unrelated (noise) procedure."""

    code: str
    title: str
    weight: float
    classes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Names and SMILES building blocks

ONSETS = (
    "b", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "cl", "dr", "fl", "gr", "pr", "st", "tr", "qu", "ch", "x",
)  # fmt: skip
VOWELS = ("a", "e", "i", "o", "u")
BRAND_ENDINGS = ("ex", "ix", "on", "ara", "ol", "yn", "ax", "era", "ium", "ene")
CEF_ENDINGS = ("zolin", "xime", "dinir", "triaxone", "pime", "tazone", "roxil", "otan")

# Branches for the scaffold slots; "" leaves a hydrogen.
SUBSTITUENTS = (
    "", "(C)", "(F)", "(Cl)", "(OC)", "(C(F)(F)F)", "(O)", "(N)", "(CC)", "(C#N)", "(Br)",
    "(OCC)", "(S(C)(=O)=O)", "(C(N)=O)", "(C9CC9)", "(SC)", "(N(C)C)", "(OC(F)(F)F)",
)  # fmt: skip

# --------------------------------------------------------------------------------------------------
# Drug classes, in inclusion order (the first ones are in every cohort).

_TAB = ("PO", "Tab", "TAB", "mg")
CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(
        "heparin", "Low-molecular-weight heparin (anticoagulant)", "parin",
        "OC1OC(COS(=O)(=O)[O-])C(OC2OC(C(=O)O)C(O)C{a}C2O)C{b}(O)C1NS(=O)(=O)O.[Na+]",
        1, "SC", "Syringe", "SYR", "mg", ("40", "60", "80"), companions=("ppi",),
    ),
    ClassSpec(
        "ppi", "Proton pump inhibitor", "prazole",
        "COc1ccc2[nH]c(S(=O)Cc3ncc{a}c(OC)c3{b})nc2c1",
        14, *_TAB, ("20", "40"),
    ),
    ClassSpec(
        "beta_blocker", "Beta-adrenergic blocker", "olol",
        "CC(C)NCC(O)COc1cc{a}c{b}cc1",
        7, *_TAB, ("12.5", "25", "50"),
    ),
    ClassSpec(
        "ace_inhibitor", "ACE inhibitor", "opril",
        "CCOC(=O)C(CCc1cc{a}cc{b}c1)NC(C)C(=O)N1CCCC1C(=O)O",
        9, *_TAB, ("2.5", "5", "10"),
    ),
    ClassSpec(
        "statin", "HMG-CoA reductase inhibitor (statin)", "vastatin",
        "OC(CC(O)CC(=O)O)/C=C/c1c(C(C)C)nc(N(C)S(C)(=O)=O)nc1-c1cc{a}c{b}cc1",
        15, *_TAB, ("10", "20", "40"),
    ),
    ClassSpec(
        "benzodiazepine", "Benzodiazepine", "azepam",
        "CN1C(=O)CN=C(c2cc{a}cc{b}c2)c2cc(Cl)ccc21",
        10, *_TAB, ("0.5", "1", "2"),
    ),
    ClassSpec(
        "beta_agonist", "Inhaled beta-2 agonist", "terol",
        "CC(C)(C)NCC(O)c1cc{a}c(O)c(CO)c1{b}",
        8, "IH", "Inhaler", "INH", "PUFF", ("1", "2"),
    ),
    ClassSpec(
        "fluoroquinolone", "Fluoroquinolone antibiotic", "floxacin",
        "OC(=O)c1cn(C2CC2)c2c{a}c(N3CCNCC3)c(F)c{b}c2c1=O",
        3, "IV", "Bag", "BAG", "mg", ("250", "500", "750"),
    ),
    ClassSpec(
        "loop_diuretic", "Loop diuretic", "semide",
        "NS(=O)(=O)c1cc(C(=O)O)c(NCc2cc{a}c{b}o2)cc1Cl",
        6, "IV", "Vial", "VIAL", "mg", ("20", "40", "80"), companions=("Potassium Chloride",),
    ),
    ClassSpec(
        "opioid", "Opioid analgesic", "codone",
        "CCC(=O)C(CC(C)N(C)C)(c1cc{a}ccc1)c1ccc{b}cc1",
        11, *_TAB, ("5", "10"), companions=("Docusate Sodium",),
    ),
    ClassSpec(
        "nsaid", "Non-steroidal anti-inflammatory drug", "profen",
        "CC(C(=O)O)c1cc{a}c(CC(C)C)c{b}c1",
        13, *_TAB, ("200", "400", "600"), companions=("ppi",),
    ),
    ClassSpec(
        "h2_blocker", "H2-receptor antagonist", "tidine",
        "CN=C(NC#N)NCCSCc1nc{a}[nH]c1{b}",
        12, "IV", "Vial", "VIAL", "mg", ("20", "40"),
    ),
    ClassSpec(
        "cephalosporin", "Cephalosporin antibiotic", "cef",
        "OC(=O)C1=C(C)CSC2C(NC(=O)Cc3cc{a}c{b}cc3)C(=O)N12",
        4, "IV", "Vial", "VIAL", "g", ("1", "2"), prefix=True,
    ),
    ClassSpec(
        "penicillin", "Penicillin antibiotic", "cillin",
        "CC1(C)SC2C(NC(=O)Cc3cc{a}cc{b}c3)C(=O)N2C1C(=O)O",
        2, "IV", "Vial", "VIAL", "g", ("2", "3", "4"),
    ),
    ClassSpec(
        "factor_xa", "Factor Xa inhibitor (anticoagulant)", "xaban",
        "Clc1cc{a}c(s1)C(=O)NCC1CN(C(=O)O1)c1cc{b}c(cc1)N1CCOCC1=O",
        1, *_TAB, ("2.5", "5", "10"), companions=("ppi",),
    ),
    ClassSpec(
        "antiplatelet", "P2Y12 antiplatelet agent", "grel",
        "COC(=O)C(c1cc{a}cc{b}c1Cl)N1CCc2sccc2C1",
        5, *_TAB, ("75",), companions=("ppi",),
    ),
    ClassSpec(
        "azole_antifungal", "Azole antifungal", "conazole",
        "OC(Cn1cncn1)(Cn1cncn1)c1cc{a}c(F)c{b}c1",
        3, "IV", "Bag", "BAG", "mg", ("100", "200", "400"),
    ),
    ClassSpec(
        "ssri", "Selective serotonin reuptake inhibitor", "oxetine",
        "CNCCC(Oc1cc{a}c(C(F)(F)F)cc1)c1ccc{b}cc1",
        16, "PO", "Cap", "CAP", "mg", ("10", "20", "40"),
    ),
    ClassSpec(
        "ccb", "Dihydropyridine calcium channel blocker", "dipine",
        "COC(=O)C1=C(C)NC(C)=C(C1c1cc{a}cc{b}c1[N+]([O-])=O)C(=O)OC",
        9, *_TAB, ("5", "10"),
    ),
    ClassSpec(
        "arb", "Angiotensin II receptor blocker", "sartan",
        "CCCCc1nc(Cl)c(CO)n1Cc1ccc(cc1)-c1cc{a}cc{b}c1-c1nnn[nH]1",
        9, *_TAB, ("25", "50", "100"),
    ),
    ClassSpec(
        "glucocorticoid", "Systemic glucocorticoid", "olone",
        "CC12CC(O)C3C(CC{b}C4=CC(=O)C=CC34C)C1CCC2(O)C(=O)C{a}O",
        8, "IV", "Vial", "VIAL", "mg", ("10", "40", "125"), companions=("ppi",),
    ),
    ClassSpec(
        "dpp4", "DPP-4 inhibitor", "gliptin",
        "NC(CC(=O)N1CCn2c(C1)nnc2C(F)(F)F)Cc1cc{a}c(F)c{b}c1F",
        15, *_TAB, ("25", "50", "100"),
    ),
    ClassSpec(
        "macrolide", "Macrolide antibiotic", "thromycin",
        "CCC1OC(=O)C(C)C(OC2C{a}C(C)(OC)C(O)C(C{b})O2)C(C)C(O)C(C)(O)CC(C)C(=O)C(C)C(O)C1(C)O",
        4, "IV", "Vial", "VIAL", "mg", ("250", "500"),
    ),
    ClassSpec(
        "carbapenem", "Carbapenem antibiotic", "penem",
        "CC(O)C1C(=O)N2C(C(=O)O)=C(SC3CNC(C3)C(=O)Nc3cc{a}cc{b}c3)C(C)C12",
        2, "IV", "Vial", "VIAL", "mg", ("500", "1000"),
    ),
    ClassSpec(
        "anticonvulsant", "Racetam anticonvulsant", "racetam",
        "CCC(N1C{a}C(c2cc{b}ccc2)CC1=O)C(N)=O",
        6, *_TAB, ("250", "500", "1000"),
    ),
    ClassSpec(
        "antiarrhythmic", "Class III antiarrhythmic", "darone",
        "CCCCc1oc2cc{a}cc{b}c2c1C(=O)c1cc(I)c(OCCN(CC)CC)c(I)c1",
        5, *_TAB, ("100", "200", "400"),
    ),
    ClassSpec(
        "anticholinergic", "Inhaled long-acting antimuscarinic", "tropium",
        "C[N+]1(C)C2CCC1CC(C2)OC(=O)C(O)(c1cc{a}cs1)c1ccc{b}s1.[Br-]",
        12, "IH", "Inhalation Capsule", "CAP", "mcg", ("18",),
    ),
    ClassSpec(
        "antiviral", "Nucleoside analogue antiviral", "ciclovir",
        "Nc1nc2n(COC{a}C{b}O)cnc2c(=O)[nH]1",
        7, *_TAB, ("200", "400", "800"),
    ),
    ClassSpec(
        "antipsychotic", "Butyrophenone antipsychotic", "peridol",
        "OC1(CCN(CCCC(=O)c2cc{a}c(F)cc2)CC1)c1cc{b}c(Cl)cc1",
        11, *_TAB, ("0.5", "1", "2", "5"),
    ),
    ClassSpec(
        "bisphosphonate", "Bisphosphonate", "dronate",
        "[Na+].OC(Cc1cc{a}cnc1{b})(P(O)([O-])=O)P(O)(O)=O",
        16, *_TAB, ("35", "70"),
    ),
    ClassSpec(
        "neuromuscular_blocker", "Aminosteroid neuromuscular blocker", "curonium",
        "CC(=O)OC1CC2CCC3C(CC{a}C4(C)C3CC{b}C4[N+]3(C)CCCCC3)C2(C)CC1N1CCOCC1.[Br-]",
        6, "IV", "Vial", "VIAL", "mg", ("50", "100"),
    ),
    ClassSpec(
        "leukotriene", "Leukotriene receptor antagonist", "lukast",
        "OC(=O)CC1(CSC(CCc2cc{a}cc{b}c2C(C)(C)O)c2cccc(C=Cc3ccc4ccc(Cl)cc4n3)c2)CC1",
        14, *_TAB, ("10",),
    ),
)  # fmt: skip

# Ward drugs: background prescriptions of the ward, in inclusion order. Several are salts written
# as separate ions ("[Na+].[Cl-]"), whose molecular graphs have atoms but no bonds.
WARD_DRUGS: tuple[WardDrugSpec, ...] = (
    WardDrugSpec("Sodium Chloride 0.9%", "[Na+].[Cl-]", 0.9, "IV", "Flush", "SYR", "mL",
                 ("10",), synonyms=("Normal Saline",)),
    WardDrugSpec("Acetaminophen", "CC(=O)Nc1ccc(O)cc1", 0.8, *_TAB, ("325", "500", "650"),
                 synonyms=("Paracetamol",)),
    WardDrugSpec("Potassium Chloride", "[K+].[Cl-]", 0.2, "PO", "Packet", "PKT", "mEq",
                 ("10", "20", "40")),
    WardDrugSpec("Magnesium Sulfate", "[Mg+2].[O-]S([O-])(=O)=O", 0.15, "IV", "Premix Bag",
                 "BAG", "gm", ("1", "2")),
    WardDrugSpec("Docusate Sodium",
                 "CCCCC(CC)COC(=O)CC(C(=O)OCC(CC)CCCC)S(=O)(=O)[O-].[Na+]", 0.12,
                 "PO", "Cap", "CAP", "mg", ("100",)),
    WardDrugSpec("Ondansetron", "Cc1nccn1CC1CCc2c(C1=O)c1ccccc1n2C", 0.1, "IV", "Vial", "VIAL",
                 "mg", ("4", "8")),
    WardDrugSpec("Dextrose 5%", "OCC1OC(O)C(O)C(O)C1O", 0.08, "IV", "Bag", "BAG", "mL",
                 ("250", "500")),
    WardDrugSpec("Bisacodyl", "CC(=O)Oc1ccc(cc1)C(c1ccc(OC(C)=O)cc1)c1ccccn1", 0.06, "PR",
                 "Suppository", "SUPP", "mg", ("10",)),
    WardDrugSpec("Calcium Chloride", "[Ca+2].[Cl-].[Cl-]", 0.04, "IV", "Syringe", "SYR", "gm",
                 ("1",)),
    WardDrugSpec("Sodium Bicarbonate", "[Na+].OC([O-])=O", 0.03, "IV", "Vial", "VIAL", "mEq",
                 ("50",)),
)  # fmt: skip

# Diluents and containers of the BASE rows of PRESCRIPTIONS. Their NDCs are not in ndc2drug.
BASE_DILUENTS = (
    ("NS", "00338004904", "1000mL Bag", "1000", "mL"),
    ("0.9% Sodium Chloride (Mini Bag Plus)", "00338055318", "100mL Bag", "100", "mL"),
    ("Iso-Osmotic Dextrose", "0", "200ml Bag", "200", "mL"),
    ("1/2 NS", "00338004304", "1000mL Bag", "1000", "mL"),
    ("SW", "0", "100mL Vial", "100", "mL"),
    ("Bag", "0", "50 mL Bag", "50", "mL"),
    ("Vial", "0", "Send Vial", "1", "VIAL"),
    ("5% Dextrose", "00409792337", "100mL Bag", "100", "mL"),
)

DDI_KINDS = (
    "bleeding", "hyperkalaemia", "QT prolongation", "serotonin syndrome",
    "respiratory depression", "hypotension", "nephrotoxicity", "hypoglycaemia", "bradycardia",
    "increased serum concentration",
)  # fmt: skip

# --------------------------------------------------------------------------------------------------
# Diseases. Chronic prevalence: probability per patient at age ~54 (it grows with age); acute
# prevalence: relative weight as the reason for an admission.

DISEASES: tuple[DiseaseSpec, ...] = (
    DiseaseSpec(
        "Essential hypertension", True, 0.45,
        ("4019", "Unspecified essential hypertension"),
        (("4011", "Benign essential hypertension"),
         ("40390", "Hypertensive chronic kidney disease, unspecified, with chronic kidney disease "
                   "stage I through stage IV, or unspecified")),
        ("ace_inhibitor", "ccb"),
    ),
    DiseaseSpec(
        "Congestive heart failure", True, 0.16,
        ("4280", "Congestive heart failure, unspecified"),
        (("42832", "Chronic diastolic heart failure"),
         ("42822", "Chronic systolic heart failure")),
        ("loop_diuretic", "beta_blocker", "ace_inhibitor"),
        (("8872", 0.4),),
    ),
    DiseaseSpec(
        "Hyperlipidaemia", True, 0.35,
        ("2724", "Other and unspecified hyperlipidemia"),
        (("2720", "Pure hypercholesterolemia"), ("2722", "Mixed hyperlipidemia")),
        ("statin",),
    ),
    DiseaseSpec(
        "Atrial fibrillation", True, 0.2,
        ("42731", "Atrial fibrillation"),
        (("42789", "Other specified cardiac dysrhythmias"),
         ("V5861", "Long-term (current) use of anticoagulants")),
        ("factor_xa", "beta_blocker", "antiarrhythmic"),
    ),
    DiseaseSpec(
        "Gastro-oesophageal reflux disease", True, 0.2,
        ("53081", "Esophageal reflux"),
        (("53010", "Esophagitis, unspecified"),),
        ("ppi",),
    ),
    DiseaseSpec(
        "Asthma", True, 0.07,
        ("49390", "Asthma, unspecified type, unspecified"),
        (("49392", "Asthma, unspecified type, with (acute) exacerbation"),),
        ("beta_agonist", "leukotriene"),
    ),
    DiseaseSpec(
        "Anxiety disorder", True, 0.1,
        ("30000", "Anxiety state, unspecified"),
        (("30002", "Generalized anxiety disorder"),),
        ("benzodiazepine",),
    ),
    DiseaseSpec(
        "Coronary artery disease", True, 0.22,
        ("41401", "Coronary atherosclerosis of native coronary artery"),
        (("412", "Old myocardial infarction"),
         ("V4582", "Percutaneous transluminal coronary angioplasty status")),
        ("beta_blocker", "statin", "antiplatelet"),
        (("8856", 0.3), ("3722", 0.3), ("0066", 0.15)),
    ),
    DiseaseSpec(
        "Deep vein thrombosis or pulmonary embolism", False, 0.6,
        ("41519", "Other pulmonary embolism and infarction"),
        (("45341", "Acute venous embolism and thrombosis of deep vessels of proximal lower "
                   "extremity"),),
        ("heparin",),
        (("8741", 0.5),),
    ),
    DiseaseSpec(
        "Gastrointestinal haemorrhage", False, 0.8,
        ("5789", "Hemorrhage of gastrointestinal tract, unspecified"),
        (("2851", "Acute posthemorrhagic anemia"),),
        ("ppi",),
        (("4513", 0.4), ("9904", 0.5), ("4443", 0.2)),
    ),
    DiseaseSpec(
        "Chronic obstructive pulmonary disease", True, 0.12,
        ("496", "Chronic airway obstruction, not elsewhere classified"),
        (("49121", "Obstructive chronic bronchitis with (acute) exacerbation"),
         ("V1582", "Personal history of tobacco use")),
        ("beta_agonist", "anticholinergic"),
        (("9390", 0.15),),
    ),
    DiseaseSpec(
        "Pneumonia", False, 1.5,
        ("486", "Pneumonia, organism unspecified"),
        (("5070", "Pneumonitis due to inhalation of food or vomitus"),
         ("51881", "Acute respiratory failure")),
        ("fluoroquinolone", "macrolide"),
        (("9604", 0.25), ("9671", 0.25), ("8741", 0.3)),
    ),
    DiseaseSpec(
        "Hip fracture", False, 0.5,
        ("82021", "Closed fracture of intertrochanteric section of neck of femur"),
        (("E8889", "Unspecified fall"),),
        ("opioid", "heparin"),
        (("7935", 0.6), ("8151", 0.3)),
    ),
    DiseaseSpec(
        "Alcohol withdrawal", False, 0.5,
        ("29181", "Alcohol withdrawal"),
        (("30500", "Alcohol abuse, unspecified"),),
        ("benzodiazepine",),
    ),
    DiseaseSpec(
        "Urinary tract infection", False, 1.0,
        ("5990", "Urinary tract infection, site not specified"),
        (),
        ("fluoroquinolone",),
    ),
    DiseaseSpec(
        "Chronic kidney disease", True, 0.12,
        ("5859", "Chronic kidney disease, unspecified"),
        (("5853", "Chronic kidney disease, Stage III (moderate)"),
         ("5856", "End stage renal disease")),
        ("arb", "loop_diuretic"),
        (("3995", 0.3),),
    ),
    DiseaseSpec(
        "Osteoarthritis", True, 0.1,
        ("71590", "Osteoarthrosis, unspecified whether generalized or localized, site "
                  "unspecified"),
        (),
        ("nsaid",),
        (("8154", 0.2), ("8151", 0.1)),
    ),
    DiseaseSpec(
        "Gout", True, 0.06,
        ("2749", "Gout, unspecified"),
        (),
        ("nsaid",),
    ),
    DiseaseSpec(
        "Sepsis", False, 1.2,
        ("0389", "Unspecified septicemia"),
        (("99591", "Sepsis"), ("78552", "Septic shock"), ("99592", "Severe sepsis")),
        ("carbapenem", "penicillin"),
        (("3893", 0.5), ("9604", 0.2), ("9672", 0.15)),
    ),
    DiseaseSpec(
        "Acute myocardial infarction", False, 1.0,
        ("41071", "Subendocardial infarction, initial episode of care"),
        (("4111", "Intermediate coronary syndrome"),),
        ("antiplatelet", "heparin", "beta_blocker", "statin"),
        (("8856", 0.6), ("3722", 0.6), ("0066", 0.4), ("3615", 0.15), ("3961", 0.15)),
    ),
    DiseaseSpec(
        "Cellulitis", False, 0.6,
        ("6826", "Cellulitis and abscess of leg, except foot"),
        (),
        ("cephalosporin",),
        (("8604", 0.2),),
    ),
    DiseaseSpec(
        "Type 2 diabetes mellitus", True, 0.25,
        ("25000", "Diabetes mellitus without mention of complication, type II or unspecified "
                  "type, not stated as uncontrolled"),
        (("25040", "Diabetes with renal manifestations, type II or unspecified type, not stated "
                   "as uncontrolled"),
         ("25060", "Diabetes with neurological manifestations, type II or unspecified type, not "
                   "stated as uncontrolled")),
        ("dpp4", "ace_inhibitor"),
    ),
    DiseaseSpec(
        "Candidiasis", False, 0.3,
        ("1125", "Disseminated candidiasis"),
        (("1120", "Candidiasis of mouth"),),
        ("azole_antifungal",),
    ),
    DiseaseSpec(
        "Major depression", True, 0.1,
        ("311", "Depressive disorder, not elsewhere classified"),
        (("29620", "Major depressive affective disorder, single episode, unspecified"),),
        ("ssri",),
    ),
    DiseaseSpec(
        "COPD exacerbation", False, 0.5,
        ("4660", "Acute bronchitis"),
        (("7862", "Cough"),),
        ("glucocorticoid", "beta_agonist"),
        (("9390", 0.2),),
    ),
    DiseaseSpec(
        "Epilepsy", True, 0.05,
        ("34590", "Epilepsy, unspecified, without mention of intractable epilepsy"),
        (("34510", "Generalized convulsive epilepsy, without mention of intractable epilepsy"),
         ("78039", "Other convulsions")),
        ("anticonvulsant",),
        (("8703", 0.3),),
    ),
    DiseaseSpec(
        "Herpes zoster", False, 0.2,
        ("0539", "Herpes zoster without mention of complication"),
        (),
        ("antiviral",),
    ),
    DiseaseSpec(
        "Delirium", False, 0.3,
        ("2930", "Delirium due to conditions classified elsewhere"),
        (("78097", "Altered mental status"),),
        ("antipsychotic",),
    ),
    DiseaseSpec(
        "Osteoporosis", True, 0.08,
        ("73300", "Osteoporosis, unspecified"),
        (),
        ("bisphosphonate",),
    ),
    DiseaseSpec(
        "Acute respiratory distress", False, 0.3,
        ("51882", "Other pulmonary insufficiency, not elsewhere classified"),
        (),
        ("neuromuscular_blocker", "glucocorticoid"),
        (("9604", 0.7), ("9672", 0.5)),
    ),
)  # fmt: skip

# (disease name, class key): the class is avoided in patients with the disease.
CONTRAINDICATIONS = (
    ("Asthma", "beta_blocker"),
    ("Chronic kidney disease", "nsaid"),
    ("Gastrointestinal haemorrhage", "nsaid"),
)
# Class-level interactions (class key or ward drug name, class key or ward drug name, kind): well
# known class effects between commonly co-prescribed drugs; planted member by member with
# ``SyntheticConfig.class_ddi_density`` (0 by default: none).
CLASS_INTERACTIONS = (
    ("beta_blocker", "beta_agonist", "bronchospasm"),
    ("beta_blocker", "ace_inhibitor", "hypotension"),
    ("ace_inhibitor", "Potassium Chloride", "hyperkalaemia"),
    ("ppi", "benzodiazepine", "increased serum concentration"),
    ("heparin", "nsaid", "bleeding"),
    ("benzodiazepine", "opioid", "respiratory depression"),
    ("fluoroquinolone", "Magnesium Sulfate", "reduced absorption"),
)
# (class key, minimum age): the class is avoided in older patients (Beers-list style).
AGE_RULES = (("benzodiazepine", 75), ("nsaid", 80))

# --------------------------------------------------------------------------------------------------
# Procedures (ICD-9-CM volume 3).

PROCEDURES: tuple[ProcedureSpec, ...] = (
    ProcedureSpec("3893", "Venous catheterization, not elsewhere classified", 3.0),
    ProcedureSpec("9604", "Insertion of endotracheal tube", 0.6, ("benzodiazepine",)),
    ProcedureSpec("3995", "Hemodialysis", 0.3, ("heparin",)),
    ProcedureSpec("8151", "Total hip replacement", 0.1, ("heparin", "opioid", "cephalosporin")),
    ProcedureSpec("9671", "Continuous invasive mechanical ventilation for less than 96 "
                          "consecutive hours", 0.5, ("h2_blocker",)),
    ProcedureSpec("9672", "Continuous invasive mechanical ventilation for 96 consecutive hours "
                          "or more", 0.3, ("h2_blocker",)),
    ProcedureSpec("8154", "Total knee replacement", 0.1, ("heparin", "opioid", "cephalosporin")),
    ProcedureSpec("7935", "Open reduction of fracture with internal fixation, femur", 0.1,
                  ("opioid", "cephalosporin")),
    ProcedureSpec("0066", "Percutaneous transluminal coronary angioplasty [PTCA]", 0.2,
                  ("antiplatelet",)),
    ProcedureSpec("3615", "Single internal mammary-coronary artery bypass", 0.1,
                  ("cephalosporin", "opioid")),
    ProcedureSpec("8856", "Coronary arteriography using two catheters", 0.5),
    ProcedureSpec("3722", "Left heart cardiac catheterization", 0.5),
    ProcedureSpec("3961", "Extracorporeal circulation auxiliary to open heart surgery", 0.1),
    ProcedureSpec("8872", "Diagnostic ultrasound of heart", 0.6),
    ProcedureSpec("9904", "Transfusion of packed cells", 1.0),
    ProcedureSpec("4513", "Other endoscopy of small intestine", 0.3),
    ProcedureSpec("4443", "Endoscopic control of gastric or duodenal bleeding", 0.1),
    ProcedureSpec("8741", "Computerized axial tomography of thorax", 0.4),
    ProcedureSpec("8703", "Computerized axial tomography of head", 0.5),
    ProcedureSpec("9390", "Non-invasive mechanical ventilation", 0.3),
    ProcedureSpec("8604", "Other incision with drainage of skin and subcutaneous tissue", 0.2,
                  ("cephalosporin",)),
    ProcedureSpec("3491", "Thoracentesis", 0.3),
    ProcedureSpec("5491", "Percutaneous abdominal drainage", 0.3),
    ProcedureSpec("311", "Temporary tracheostomy", 0.2),
    ProcedureSpec("4311", "Percutaneous [endoscopic] gastrostomy [PEG]", 0.2),
    ProcedureSpec("9915", "Parenteral infusion of concentrated nutritional substances", 0.3),
    ProcedureSpec("3324", "Closed [endoscopic] biopsy of bronchus", 0.1),
    ProcedureSpec("3897", "Central venous catheter placement with guidance", 0.8),
    ProcedureSpec("0040", "Procedure on single vessel", 0.2),
    ProcedureSpec("0045", "Insertion of one vascular stent", 0.2),
    ProcedureSpec("3607", "Insertion of drug-eluting coronary artery stent(s)", 0.2),
    ProcedureSpec("9907", "Transfusion of other serum", 0.3),
    ProcedureSpec("9905", "Transfusion of platelets", 0.2),
    ProcedureSpec("4523", "Colonoscopy", 0.2),
    ProcedureSpec("8622", "Excisional debridement of wound, infection, or burn", 0.2),
    ProcedureSpec("5459", "Other lysis of peritoneal adhesions", 0.1),
    ProcedureSpec("0331", "Spinal tap", 0.1),
    ProcedureSpec("3404", "Insertion of intercostal catheter for drainage", 0.2),
    ProcedureSpec("9962", "Other electric countershock of heart", 0.1),
    ProcedureSpec("9910", "Injection or infusion of thrombolytic agent", 0.05),
)  # fmt: skip

NOISE_PROCEDURE_ACTIONS = (
    "Biopsy", "Excision of lesion", "Incision", "Repair", "Drainage", "Endoscopic inspection",
    "Local destruction of lesion", "Diagnostic aspiration", "Revision", "Removal of foreign body",
)  # fmt: skip
NOISE_PROCEDURE_SITES = (
    "liver", "kidney", "bladder", "skin and subcutaneous tissue", "pancreas", "spleen",
    "thyroid", "shoulder", "knee", "wrist", "abdominal wall", "pleura", "pericardium",
    "stomach", "colon", "rectum", "eyelid", "ear", "nasal sinus", "larynx", "ureter", "prostate",
)  # fmt: skip
NOISE_PROCEDURE_APPROACHES = (
    "", ", open approach", ", percutaneous approach", ", endoscopic approach",
    ", laparoscopic approach", ", unilateral", ", bilateral", ", revision",
)  # fmt: skip

# --------------------------------------------------------------------------------------------------
# Unrelated diagnoses (comorbidities, symptoms, status codes) emitted at random.

NOISE_DIAGNOSES: tuple[tuple[str, str], ...] = (
    ("2859", "Anemia, unspecified"),
    ("2768", "Hypopotassemia"),
    ("2761", "Hyposmolality and/or hyponatremia"),
    ("2449", "Unspecified acquired hypothyroidism"),
    ("5849", "Acute kidney failure, unspecified"),
    ("2762", "Acidosis"),
    ("3051", "Tobacco use disorder"),
    ("V4986", "Do not resuscitate status"),
    ("2875", "Thrombocytopenia, unspecified"),
    ("27800", "Obesity, unspecified"),
    ("4589", "Hypotension, unspecified"),
    ("5119", "Unspecified pleural effusion"),
    ("78650", "Chest pain, unspecified"),
    ("7802", "Syncope and collapse"),
    ("V4581", "Aortocoronary bypass status"),
    ("78791", "Diarrhea"),
    ("79092", "Abnormal coagulation profile"),
    ("4240", "Mitral valve disorders"),
    ("4241", "Aortic valve disorders"),
    ("5180", "Pulmonary collapse"),
    ("V1251", "Personal history of venous thrombosis and embolism"),
    ("3310", "Alzheimer's disease"),
    ("4439", "Peripheral vascular disease, unspecified"),
    ("V4501", "Cardiac pacemaker in situ"),
    ("2767", "Hyperpotassemia"),
    ("78060", "Fever, unspecified"),
    ("5715", "Cirrhosis of liver without mention of alcohol"),
    ("60000", "Hypertrophy (benign) of prostate without urinary obstruction and other lower "
              "urinary tract symptoms (LUTS)"),
    ("32723", "Obstructive sleep apnea (adult)(pediatric)"),
    ("2639", "Unspecified protein-calorie malnutrition"),
    ("2809", "Iron deficiency anemia, unspecified"),
    ("7140", "Rheumatoid arthritis"),
    ("3320", "Paralysis agitans"),
    ("4168", "Other chronic pulmonary heart diseases"),
    ("4271", "Paroxysmal ventricular tachycardia"),
    ("4275", "Cardiac arrest"),
    ("5920", "Calculus of kidney"),
    ("V103", "Personal history of malignant neoplasm of breast"),
    ("V420", "Kidney replaced by transplant"),
    ("V5865", "Long-term (current) use of steroids"),
    ("V5867", "Long-term (current) use of insulin"),
    ("E8497", "Accidents occurring in residential institution"),
    ("E8798", "Other specified procedures as the cause of abnormal reaction of patient, or of "
              "later complication, without mention of misadventure at time of procedure"),
    ("2753", "Disorders of phosphorus metabolism"),
    ("5609", "Unspecified intestinal obstruction"),
    ("70703", "Pressure ulcer, lower back"),
    ("7994", "Cachexia"),
    ("7907", "Bacteremia"),
    ("3004", "Dysthymic disorder"),
    ("7245", "Backache, unspecified"),
    ("7295", "Pain in limb"),
    ("3569", "Unspecified hereditary and idiopathic peripheral neuropathy"),
)  # fmt: skip

# Building blocks for further unrelated diagnoses when a cohort asks for more codes than the
# tables above hold; their codes are ICD-9-shaped but synthetic.
SYNTHETIC_DIAG_QUALIFIERS = (
    "Other specified", "Unspecified", "Acute", "Chronic", "Recurrent", "Late effect of",
    "Congenital",
)  # fmt: skip
SYNTHETIC_DIAG_FINDINGS = (
    "disorder", "lesion", "inflammation", "contusion", "sprain", "cyst", "anomaly", "injury",
)  # fmt: skip
SYNTHETIC_DIAG_SITES = (
    "shoulder", "knee", "forearm", "eyelid", "ear", "skin", "scalp", "ankle", "wrist", "retina",
    "thyroid", "spleen", "bladder", "hip", "elbow", "lip", "tongue", "salivary gland", "cornea",
)  # fmt: skip
SYNTHETIC_DIAG_SUFFIXES = (
    "", ", left side", ", right side", ", bilateral", ", initial episode", ", subsequent episode",
    ", with complication", ", without complication", ", sequela", ", recurrent episode",
)  # fmt: skip

# --------------------------------------------------------------------------------------------------

_ABBREVIATIONS = (
    ("not elsewhere classified", "NEC"), ("without mention of", "w/o"), ("without", "w/o"),
    ("with", "w"), ("unspecified", "NOS"), ("other", "oth"), ("disease", "dis"),
    ("chronic", "chr"), ("acute", "ac"), ("disorder", "dis"), ("infection", "inf"),
    ("personal history of", "hx"), ("long-term \\(current\\) use of", "long-term use"),
    ("and", "&"), ("of", ""), ("type II", "II"), ("diabetes mellitus", "DMII"),
    ("diabetes", "DMII"), ("continuous invasive mechanical ventilation", "cont inv mec ven"),
    ("computerized axial tomography", "C.A.T. scan"), ("transfusion", "transfus"),
    ("catheterization", "cath"), ("insertion", "insert"),
)  # fmt: skip


_ABBREVIATION_PATTERNS = tuple(
    (re.compile(rf"\b{long}\b", re.IGNORECASE), abbr) for long, abbr in _ABBREVIATIONS
)


def short_title(title: str) -> str:
    """An ICD-style SHORT_TITLE (at most 24 characters) abbreviated from a long title.

    Examples:
      >>> short_title("Unspecified essential hypertension")
      'NOS essential hypertensi'
      >>> short_title("Chronic kidney disease, Stage III (moderate)")
      'Chr kidney dis Stage III'
      >>> short_title("Hemodialysis")
      'Hemodialysis'
    """
    short = title
    for pattern, abbr in _ABBREVIATION_PATTERNS:
        capital = abbr[:1].upper() + abbr[1:]
        short = pattern.sub(lambda m, a=abbr, c=capital: c if m.group(0)[0].isupper() else a, short)
    short = " ".join(short.replace(",", "").split())
    return short[:24].rstrip()


# --------------------------------------------------------------------------------------------------
# Categorical values of the MIMIC-III tables: (values, probabilities).

ADMISSION_TYPES = (("EMERGENCY", "ELECTIVE", "URGENT"), (0.78, 0.15, 0.07))
ADMISSION_LOCATIONS = (
    ("EMERGENCY ROOM ADMIT", "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL/PREMATURE"),
    (0.7, 0.2, 0.1),
)
ELECTIVE_LOCATION = "PHYS REFERRAL/NORMAL DELI"
DISCHARGE_LOCATIONS = (
    ("HOME", "HOME HEALTH CARE", "SNF", "REHAB/DISTINCT PART HOSP", "LONG TERM CARE HOSPITAL"),
    (0.4, 0.25, 0.2, 0.1, 0.05),
)
INSURANCES = (("Private", "Medicaid", "Government", "Self Pay"), (0.7, 0.2, 0.06, 0.04))
# Per patient; "" is a missing value.
PATIENT_ATTRIBUTES = {
    "LANGUAGE": (("ENGL", "SPAN", "RUSS", "PTUN", "CANT", ""),
                 (0.72, 0.06, 0.03, 0.02, 0.02, 0.15)),
    "RELIGION": (("CATHOLIC", "NOT SPECIFIED", "UNOBTAINABLE", "PROTESTANT QUAKER", "JEWISH",
                  "OTHER", "EPISCOPALIAN", "MUSLIM", "BUDDHIST"),
                 (0.35, 0.2, 0.12, 0.14, 0.08, 0.05, 0.03, 0.02, 0.01)),
    "MARITAL_STATUS": (("MARRIED", "SINGLE", "WIDOWED", "DIVORCED", "SEPARATED",
                        "UNKNOWN (DEFAULT)", ""), (0.45, 0.25, 0.13, 0.07, 0.02, 0.03, 0.05)),
    "ETHNICITY": (("WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC OR LATINO", "ASIAN",
                   "UNKNOWN/NOT SPECIFIED", "OTHER"), (0.7, 0.09, 0.04, 0.03, 0.1, 0.04)),
}  # fmt: skip
NDC_LABELERS = (
    "00006", "00074", "00088", "00338", "00409", "00904", "51079", "55390", "63323", "00781",
    "68084", "00143", "60505", "00093", "00054",
)  # fmt: skip
