//! DICOM PS3.15 Annex E, Table E.1-1: what the Basic Application Level
//! Confidentiality Profile does to each attribute, and what its options keep.
//! The table itself is data (`data/ps3.15-table-e.1-1.csv`, its edition named
//! in its header), compiled into the binary.

use std::collections::HashMap;

use dicom_core::Tag;

use crate::IngestError;

const TABLE_CSV: &str = include_str!("../data/ps3.15-table-e.1-1.csv");

/// An option of the profile a de-identifier may declare in
/// DeidentificationMethodCodeSequence (0012,0064), with its code from
/// PS3.16 CID 7050 "De-identification Method".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileOption {
    RetainSafePrivate,
    RetainUids,
    RetainDeviceIdentity,
    RetainInstitutionIdentity,
    RetainPatientCharacteristics,
    RetainLongitudinalFullDates,
    RetainLongitudinalModifiedDates,
    CleanDescriptors,
    CleanStructuredContent,
    CleanGraphics,
}

impl ProfileOption {
    /// Every option, in the order of the table's option columns.
    pub const ALL: [ProfileOption; 10] = [
        Self::RetainSafePrivate,
        Self::RetainUids,
        Self::RetainDeviceIdentity,
        Self::RetainInstitutionIdentity,
        Self::RetainPatientCharacteristics,
        Self::RetainLongitudinalFullDates,
        Self::RetainLongitudinalModifiedDates,
        Self::CleanDescriptors,
        Self::CleanStructuredContent,
        Self::CleanGraphics,
    ];

    /// The option a CID 7050 code value (scheme DCM) declares, if any.
    pub fn from_code(code_value: &str) -> Option<Self> {
        // PS3.16 CID 7050: 113100 is the Basic Profile itself, 113101 Clean
        // Pixel Data and 113102 Clean Recognizable Visual Features concern
        // pixels, not attributes.
        Some(match code_value {
            "113103" => Self::CleanGraphics,
            "113104" => Self::CleanStructuredContent,
            "113105" => Self::CleanDescriptors,
            "113106" => Self::RetainLongitudinalFullDates,
            "113107" => Self::RetainLongitudinalModifiedDates,
            "113108" => Self::RetainPatientCharacteristics,
            "113109" => Self::RetainDeviceIdentity,
            "113110" => Self::RetainUids,
            "113111" => Self::RetainSafePrivate,
            "113112" => Self::RetainInstitutionIdentity,
            _ => return None,
        })
    }

    /// The CID 7050 code value and meaning.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            Self::CleanGraphics => ("113103", "Clean Graphics Option"),
            Self::CleanStructuredContent => ("113104", "Clean Structured Content Option"),
            Self::CleanDescriptors => ("113105", "Clean Descriptors Option"),
            Self::RetainLongitudinalFullDates => (
                "113106",
                "Retain Longitudinal Temporal Information Full Dates Option",
            ),
            Self::RetainLongitudinalModifiedDates => (
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ),
            Self::RetainPatientCharacteristics => {
                ("113108", "Retain Patient Characteristics Option")
            }
            Self::RetainDeviceIdentity => ("113109", "Retain Device Identity Option"),
            Self::RetainUids => ("113110", "Retain UIDs Option"),
            Self::RetainSafePrivate => ("113111", "Retain Safe Private Option"),
            Self::RetainInstitutionIdentity => ("113112", "Retain Institution Identity Option"),
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of declared options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionSet(u16);

impl OptionSet {
    pub fn insert(&mut self, o: ProfileOption) {
        self.0 |= o.bit();
    }

    pub fn contains(self, o: ProfileOption) -> bool {
        self.0 & o.bit() != 0
    }
}

/// One row of Table E.1-1.
#[derive(Debug, Clone)]
pub struct ProfileRule {
    /// Attribute name as the table prints it.
    pub name: String,
    /// Basic Profile action, e.g. "X", "X/Z", "Z/D", "U".
    pub basic: String,
    /// Options whose column says K (keep) or C (clean) for this attribute:
    /// with one of them declared the attribute may stay.
    pub kept_by: OptionSet,
}

impl ProfileRule {
    /// PS3.15 E.1.1: action X removes the attribute; only the pure X action
    /// forbids a value — every combination with Z or D allows an empty or
    /// dummy value, and U a replaced UID.
    pub fn must_be_removed(&self) -> bool {
        self.basic == "X"
    }
}

/// The whole table, indexed by tag; rows with repeating groups (50xx,xxxx),
/// (60xx,3000), (60xx,4000) are matched by mask.
#[derive(Debug)]
pub struct ConfidentialityTable {
    exact: HashMap<u32, ProfileRule>,
    /// (value, mask, rule): a tag matches when `tag & mask == value`.
    masked: Vec<(u32, u32, ProfileRule)>,
}

impl ConfidentialityTable {
    /// The table compiled into Clew.
    pub fn standard() -> Result<Self, IngestError> {
        Self::parse(TABLE_CSV)
    }

    /// Parses the CSV form (see the data file's header for the columns).
    pub fn parse(csv: &str) -> Result<Self, IngestError> {
        let bad = |line: usize, why: &str| IngestError::Table(format!("line {line}: {why}"));
        let mut exact = HashMap::new();
        let mut masked = Vec::new();
        let mut header_seen = false;
        for (n, line) in csv.lines().enumerate() {
            let n = n + 1;
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split(',').collect();
            if !header_seen {
                if cols.first() != Some(&"tag") || cols.len() != 13 {
                    return Err(bad(n, "expected the header row with 13 columns"));
                }
                header_seen = true;
                continue;
            }
            if cols.len() != 13 {
                return Err(bad(n, "expected 13 columns"));
            }
            let tag = cols[0];
            if tag.len() != 8 || !tag.chars().all(|c| c.is_ascii_hexdigit() || c == 'x') {
                return Err(bad(n, "tag must be 8 hex digits (x for any)"));
            }
            let mut kept_by = OptionSet::default();
            for (i, o) in ProfileOption::ALL.iter().enumerate() {
                if matches!(cols[3 + i], "K" | "C") {
                    kept_by.insert(*o);
                }
            }
            let rule = ProfileRule {
                name: cols[1].to_string(),
                basic: cols[2].to_string(),
                kept_by,
            };
            let value_of = |c: char| if c == 'x' { '0' } else { c };
            let value = u32::from_str_radix(&tag.chars().map(value_of).collect::<String>(), 16)
                .map_err(|e| bad(n, &e.to_string()))?;
            if tag.contains('x') {
                let mask = u32::from_str_radix(
                    &tag.chars()
                        .map(|c| if c == 'x' { '0' } else { 'f' })
                        .collect::<String>(),
                    16,
                )
                .map_err(|e| bad(n, &e.to_string()))?;
                masked.push((value, mask, rule));
            } else {
                exact.insert(value, rule);
            }
        }
        if exact.is_empty() {
            return Err(IngestError::Table("no rows".into()));
        }
        Ok(Self { exact, masked })
    }

    /// The rule for a (public) tag, if the table lists it.
    pub fn rule(&self, tag: Tag) -> Option<&ProfileRule> {
        let t = (u32::from(tag.group()) << 16) | u32::from(tag.element());
        self.exact.get(&t).or_else(|| {
            self.masked
                .iter()
                .find(|(v, m, _)| t & m == *v)
                .map(|(_, _, r)| r)
        })
    }

    /// Every tag whose Basic Profile action is pure X (for tests and reports).
    pub fn removed_tags(&self) -> impl Iterator<Item = Tag> + '_ {
        self.exact
            .iter()
            .filter(|(_, r)| r.must_be_removed())
            .map(|(t, _)| Tag((t >> 16) as u16, (t & 0xffff) as u16))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.exact.len() + self.masked.len()
    }

    /// Whether the table has no rows (never true for the standard one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_table_has_the_rows_the_gate_relies_on() {
        let t = ConfidentialityTable::standard().unwrap();
        assert!(t.len() > 600, "{} rows", t.len());
        let addr = t.rule(Tag(0x0010, 0x1040)).unwrap();
        assert_eq!(addr.basic, "X");
        assert!(addr.must_be_removed());
        let age = t.rule(Tag(0x0010, 0x1010)).unwrap();
        assert!(age.must_be_removed());
        assert!(age
            .kept_by
            .contains(ProfileOption::RetainPatientCharacteristics));
        assert!(!age.kept_by.contains(ProfileOption::RetainUids));
        // Patient's Name is Z: a dummy value is allowed.
        assert!(!t.rule(Tag(0x0010, 0x0010)).unwrap().must_be_removed());
        // Repeating groups match by mask.
        assert_eq!(t.rule(Tag(0x6002, 0x3000)).unwrap().name, "Overlay Data");
        assert!(t.rule(Tag(0x6002, 0x0010)).is_none());
        assert_eq!(t.rule(Tag(0x5004, 0x1234)).unwrap().name, "Curve Data");
    }

    #[test]
    fn option_codes_round_trip() {
        for o in ProfileOption::ALL {
            assert_eq!(ProfileOption::from_code(o.code().0), Some(o));
        }
        assert_eq!(ProfileOption::from_code("113100"), None);
    }

    #[test]
    fn malformed_tables_are_refused_with_the_line() {
        let e = ConfidentialityTable::parse("tag,a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let header = "tag,name,basic,a,b,c,d,e,f,g,h,i,j\n";
        let e = ConfidentialityTable::parse(&format!("{header}0010zz10,n,X,,,,,,,,,,\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
