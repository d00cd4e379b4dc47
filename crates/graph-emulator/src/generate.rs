//! A deterministic tenant from a seed: realistic people, offices, licences and groups (nested, a few
//! very large), with the awkward cases a sync must handle (guests, disabled accounts, non-ASCII
//! names, users without mail or without given name).

use std::collections::{BTreeMap, HashMap};

use crate::model::{Directory, FIELD_COUNT, Field, Group, MemberKind, Packed, Sku, User, UserState};

/// splitmix64: tiny, fast and good enough for test data; the same seed gives the same tenant.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }

    /// True with probability `share`.
    pub(crate) fn chance(&mut self, share: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < share
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A GUID-shaped (version 4) id derived from `value`.
pub(crate) fn guid(value: u64) -> String {
    let high = mix(value);
    let low = mix(value ^ 0xa5a5_a5a5_a5a5_a5a5);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0x0fff,
        0x8000 | (low >> 48) & 0x3fff,
        low & 0xffff_ffff_ffff
    )
}

pub(crate) const DOMAIN: &str = "northwind.onmicrosoft.com";
pub(crate) const COMPANY: &str = "Northwind Traders";

pub(crate) const GIVEN_NAMES: &[&str] = &[
    "Ana", "Åsa", "Björn", "Chloé", "Dmitri", "Élodie", "Fátima", "Günter", "Hana", "Íñigo", "Jürgen",
    "Kofi", "Léa", "Mateo", "Núria", "Øystein", "Paweł", "Renée", "Siobhán", "Tomás", "Zoë", "Søren", "José",
    "Ines", "Lukas", "Mei", "Priya", "Omar", "Sara", "Noah", "Emma", "Liam", "Olivia", "Yuki", "Aroha",
    "Chidi", "Nadia", "Ravi", "Ingrid", "Mikael", "Anaïs", "Bruno", "Ciarán", "Dagný", "Eero", "Frida",
];

pub(crate) const SURNAMES: &[&str] = &[
    "Øster",
    "García",
    "Müller",
    "Núñez",
    "Dubois",
    "Kowalski",
    "Sørensen",
    "Nakamura",
    "O'Brien",
    "Łukasiewicz",
    "Jensen",
    "Rossi",
    "Silva",
    "Novák",
    "Papadopoulos",
    "Nguyen",
    "Okafor",
    "Fernández",
    "Schäfer",
    "Lindqvist",
    "Håkansson",
    "Kim",
    "Patel",
    "Smith",
    "Johnson",
    "Ahmed",
    "Costa",
    "Bianchi",
    "Horváth",
    "Çelik",
    "Virtanen",
    "Ó Súilleabháin",
    "Weiß",
    "Yılmaz",
];

pub(crate) const DEPARTMENTS: &[&str] = &[
    "Sales",
    "Marketing",
    "Engineering",
    "Finance",
    "Human Resources",
    "Legal",
    "Customer Support",
    "Operations",
    "Research",
    "IT",
];

pub(crate) const JOB_TITLES: &[&str] = &[
    "Account Executive",
    "Sales Manager",
    "Marketing Specialist",
    "Software Engineer",
    "Senior Software Engineer",
    "Engineering Manager",
    "Financial Analyst",
    "Controller",
    "HR Business Partner",
    "Recruiter",
    "Legal Counsel",
    "Support Specialist",
    "Support Team Lead",
    "Operations Manager",
    "Research Scientist",
    "IT Administrator",
    "Product Owner",
    "Data Analyst",
];

/// An office people work at, with what follows from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Office {
    pub(crate) city: &'static str,
    pub(crate) country: &'static str,
    pub(crate) usage_location: &'static str,
    pub(crate) name: &'static str,
    pub(crate) phone_prefix: &'static str,
    pub(crate) language: &'static str,
    pub(crate) street: &'static str,
    pub(crate) postal_code: &'static str,
}

pub(crate) const OFFICES: &[Office] = &[
    Office {
        city: "Oslo",
        country: "Norway",
        usage_location: "NO",
        name: "Oslo Bjørvika 4/112",
        phone_prefix: "+47",
        language: "nb-NO",
        street: "Dronning Eufemias gate 16",
        postal_code: "0191",
    },
    Office {
        city: "Paris",
        country: "France",
        usage_location: "FR",
        name: "Paris La Défense 12/301",
        phone_prefix: "+33",
        language: "fr-FR",
        street: "1 Parvis de la Défense",
        postal_code: "92800",
    },
    Office {
        city: "Madrid",
        country: "Spain",
        usage_location: "ES",
        name: "Madrid Castellana 3/210",
        phone_prefix: "+34",
        language: "es-ES",
        street: "Paseo de la Castellana 95",
        postal_code: "28046",
    },
    Office {
        city: "München",
        country: "Germany",
        usage_location: "DE",
        name: "München Werk 2/015",
        phone_prefix: "+49",
        language: "de-DE",
        street: "Leopoldstraße 250",
        postal_code: "80807",
    },
    Office {
        city: "Seattle",
        country: "United States",
        usage_location: "US",
        name: "Seattle 18/2111",
        phone_prefix: "+1",
        language: "en-US",
        street: "1 Microsoft Way",
        postal_code: "98052",
    },
    Office {
        city: "São Paulo",
        country: "Brazil",
        usage_location: "BR",
        name: "São Paulo Paulista 9/900",
        phone_prefix: "+55",
        language: "pt-BR",
        street: "Avenida Paulista 1000",
        postal_code: "01310-100",
    },
    Office {
        city: "Tokyo",
        country: "Japan",
        usage_location: "JP",
        name: "Tokyo Marunouchi 21/04",
        phone_prefix: "+81",
        language: "ja-JP",
        street: "2-7-2 Marunouchi",
        postal_code: "100-0005",
    },
    Office {
        city: "Dublin",
        country: "Ireland",
        usage_location: "IE",
        name: "Dublin Docklands 2/77",
        phone_prefix: "+353",
        language: "en-IE",
        street: "70 Sir John Rogerson's Quay",
        postal_code: "D02 R296",
    },
];

const GUEST_DOMAINS: &[&str] = &[
    "fabrikam.com",
    "adatum.com",
    "litware.example",
    "tailspintoys.example",
];

/// (skuId, skuPartNumber): real SKU ids of common Microsoft 365 licences.
pub(crate) const SKUS: &[(&str, &str)] = &[
    ("6fd2c87f-b296-42f0-b197-1e91e994b900", "ENTERPRISEPACK"),
    ("06ebc4ee-1bb5-47dd-8120-11324bc54e06", "SPE_E5"),
    ("efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "EMS"),
    ("f8a1db68-be16-40ed-86d5-cb42ce701560", "POWER_BI_PRO"),
];

/// A lower-case ASCII form of a name for mail addresses: "Øystein O'Brien" → "oysteinobrien".
pub(crate) fn ascii_fold(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let replacement = match c {
            'a'..='z' | '0'..='9' => {
                folded.push(c);
                continue;
            }
            'á' | 'à' | 'â' | 'ä' | 'å' | 'ã' => "a",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'í' | 'ì' | 'î' | 'ï' | 'ı' => "i",
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' => "o",
            'ú' | 'ù' | 'û' | 'ü' => "u",
            'ñ' => "n",
            'ç' | 'č' => "c",
            'ł' => "l",
            'ß' => "ss",
            'ş' | 'š' => "s",
            'ğ' => "g",
            'ý' | 'ÿ' => "y",
            'ž' => "z",
            'æ' => "ae",
            _ => "",
        };
        folded.push_str(replacement);
    }
    folded
}

/// Generates `users` users and `groups` groups from `seed`.
/// Generated users last signed in during the 90 days before this time (2026-11-02T00:00:00Z); a
/// fixed time, so that a seed always gives the same tenant.
const LAST_SIGN_INS_BEFORE: i64 = 1_793_577_600;

pub(crate) fn tenant(users: usize, groups: usize, seed: u64) -> Directory {
    let mut rng = Rng::new(seed);
    let base_created = crate::clock::parse_iso("2019-01-07T09:00:00Z").unwrap_or(0);
    let ids: Vec<String> = (0..users).map(|_| guid(rng.next_u64())).collect();
    let folded_given: Vec<String> = GIVEN_NAMES.iter().map(|name| ascii_fold(name)).collect();
    let folded_surnames: Vec<String> = SURNAMES.iter().map(|name| ascii_fold(name)).collect();
    let mut taken: HashMap<String, u32> = HashMap::new();
    let mut generated: Vec<(Box<str>, User)> = Vec::with_capacity(users);
    let mut departments: Vec<u8> = Vec::with_capacity(users);
    for (index, id) in ids.iter().enumerate() {
        let (given_index, surname_index) = (rng.below(GIVEN_NAMES.len()), rng.below(SURNAMES.len()));
        let (given, surname) = (GIVEN_NAMES[given_index], SURNAMES[surname_index]);
        let (given_ascii, surname_ascii) = (&folded_given[given_index], &folded_surnames[surname_index]);
        let department = rng.below(DEPARTMENTS.len());
        departments.push(department as u8);
        let Office {
            city,
            country,
            usage_location: usage,
            name: office_name,
            phone_prefix: prefix,
            language,
            street,
            postal_code: postal,
        } = *rng.pick(OFFICES);
        let guest = rng.chance(0.05);
        let nameless = !guest && rng.chance(0.02);
        let base = if nameless {
            format!("room.{surname_ascii}")
        } else {
            format!("{given_ascii}.{surname_ascii}")
        };
        let counter = taken.entry(base.clone()).or_insert(0);
        *counter += 1;
        let alias = if *counter == 1 {
            base
        } else {
            format!("{base}{counter}")
        };
        let (upn, mail, nickname, user_type, external_state) = if guest {
            let their = *rng.pick(GUEST_DOMAINS);
            let nickname = format!("{alias}_{their}#EXT#");
            (
                format!("{nickname}@{DOMAIN}"),
                Some(format!("{alias}@{their}")),
                nickname,
                "Guest",
                Some("Accepted"),
            )
        } else {
            let upn = format!("{alias}@{DOMAIN}");
            let mail = (!rng.chance(0.03)).then(|| upn.clone());
            (upn, mail, alias, "Member", None)
        };
        let display = if nameless {
            format!("Conf Room {surname}")
        } else {
            format!("{given} {surname}")
        };
        let title = (!guest).then(|| *rng.pick(JOB_TITLES));
        let mobile = (!guest && rng.chance(0.8)).then(|| format!("{prefix} 555 {:04}", rng.below(10_000)));
        let business = (!guest && rng.chance(0.7)).then(|| format!("{prefix} 555 0{:03}", rng.below(1000)));
        let employee_id = (!guest).then(|| format!("E{:06}", index + 1));
        let employee_type = (!guest).then(|| if rng.chance(0.1) { "Contractor" } else { "Employee" });
        let mut licenses: Vec<&str> = Vec::new();
        if !guest {
            licenses.push(if rng.chance(0.2) { SKUS[1].0 } else { SKUS[0].0 });
            if rng.chance(0.3) {
                licenses.push(SKUS[2].0);
            }
            if rng.chance(0.15) {
                licenses.push(SKUS[3].0);
            }
        }
        let licenses = licenses.join(",");
        let manager = (index > 0 && !guest && rng.chance(0.8)).then(|| ids[rng.below(index)].as_str());
        let created = crate::clock::iso(base_created + rng.below(2000 * 86_400) as i64);
        let mut values: [&str; FIELD_COUNT] = [""; FIELD_COUNT];
        fn put<'a>(values: &mut [&'a str; FIELD_COUNT], field: Field, value: Option<&'a str>) {
            values[field as usize] = value.unwrap_or("");
        }
        put(&mut values, Field::UserPrincipalName, Some(&upn));
        put(&mut values, Field::Mail, mail.as_deref());
        put(&mut values, Field::DisplayName, Some(&display));
        put(&mut values, Field::GivenName, (!nameless).then_some(given));
        put(&mut values, Field::Surname, (!nameless).then_some(surname));
        put(&mut values, Field::JobTitle, title);
        put(
            &mut values,
            Field::Department,
            (!guest).then_some(DEPARTMENTS[department]),
        );
        put(&mut values, Field::CompanyName, (!guest).then_some(COMPANY));
        put(
            &mut values,
            Field::OfficeLocation,
            (!guest).then_some(office_name),
        );
        put(&mut values, Field::StreetAddress, (!guest).then_some(street));
        put(&mut values, Field::City, Some(city));
        put(&mut values, Field::PostalCode, (!guest).then_some(postal));
        put(&mut values, Field::Country, Some(country));
        put(&mut values, Field::MobilePhone, mobile.as_deref());
        put(&mut values, Field::BusinessPhone, business.as_deref());
        put(&mut values, Field::EmployeeId, employee_id.as_deref());
        put(&mut values, Field::EmployeeType, employee_type);
        put(&mut values, Field::UserType, Some(user_type));
        put(&mut values, Field::PreferredLanguage, Some(language));
        put(&mut values, Field::UsageLocation, Some(usage));
        put(&mut values, Field::MailNickname, Some(&nickname));
        put(&mut values, Field::CreatedDateTime, Some(&created));
        put(&mut values, Field::ExternalUserState, external_state);
        put(&mut values, Field::Manager, manager);
        put(&mut values, Field::Licenses, Some(&licenses));
        // Values are a few dozen bytes each, far from Packed's 64 KiB limit.
        let fields = Packed::from_values(&values).unwrap_or_default();
        // Drawn from their own stream so that tenants of a seed keep every other value they had.
        let mut activity = Rng::new(seed ^ (index as u64).wrapping_mul(0xa24b_aed4_963e_e407));
        let last_sign_in =
            (!activity.chance(0.05)).then(|| LAST_SIGN_INS_BEFORE - activity.below(90 * 86_400) as i64);
        let user = User {
            fields,
            account_enabled: !rng.chance(0.03),
            state: UserState::Active,
            last_sign_in,
            mfa_registered: activity.chance(0.85),
        };
        generated.push((id.clone().into_boxed_str(), user));
    }
    // Sorted first, the map is built in one pass instead of a million random inserts (which
    // spent most of their time comparing ids).
    generated.sort_unstable_by(|(left, _), (right, _)| {
        // Ids are GUIDs: their first eight bytes nearly always decide, without a memcmp call.
        let head = |id: &str| {
            id.as_bytes()
                .first_chunk::<8>()
                .map(|bytes| u64::from_be_bytes(*bytes))
        };
        head(left).cmp(&head(right)).then_with(|| left.cmp(right))
    });
    let user_map: BTreeMap<Box<str>, User> = generated.into_iter().collect();
    let group_map = generate_groups(&mut rng, &ids, &departments, groups, base_created);
    let skus = SKUS
        .iter()
        .map(|(sku_id, part)| Sku {
            sku_id: (*sku_id).to_owned(),
            sku_part_number: (*part).to_owned(),
            prepaid_units: (users as u32).saturating_add(25),
        })
        .collect();
    Directory {
        domain: DOMAIN.to_owned(),
        company: COMPANY.to_owned(),
        users: user_map,
        purged: BTreeMap::new(),
        groups: group_map,
        skus,
        log: Vec::new(),
        next_id: seed.wrapping_mul(0x1000_0000),
    }
}

/// Groups with about 20 members on average: a few very large ones take half of that budget,
/// department teams take their department's people, and some groups nest earlier groups.
fn generate_groups(
    rng: &mut Rng,
    users: &[String],
    departments: &[u8],
    count: usize,
    base_created: i64,
) -> BTreeMap<Box<str>, Group> {
    let mut names: Vec<String> = vec!["All Staff".to_owned(), "Support Operations".to_owned()];
    names.extend(DEPARTMENTS.iter().map(|department| format!("{department} Team")));
    names.extend(OFFICES.iter().map(|office| format!("Office {}", office.city)));
    let mut project = 1;
    while names.len() < count {
        names.push(format!("Project Nordlys {project}"));
        project += 1;
    }
    names.truncate(count);
    let ids: Vec<String> = (0..count).map(|_| guid(rng.next_u64())).collect();
    let large = (count / 20).max(1);
    let budget = 20 * count;
    let large_size = (budget / (2 * large)).min(users.len());
    let small_size = budget / 2 / count.saturating_sub(large).max(1);
    let mut map = BTreeMap::new();
    for (index, name) in names.iter().enumerate() {
        let unified = index % 4 == 3;
        let nickname = ascii_fold(name);
        let mut members: BTreeMap<Box<str>, MemberKind> = BTreeMap::new();
        let department = DEPARTMENTS
            .iter()
            .position(|department| *name == format!("{department} Team"));
        if !users.is_empty() {
            if index < large {
                let start = rng.below(users.len());
                for offset in 0..large_size {
                    let user = &users[(start + offset) % users.len()];
                    members.insert(user.as_str().into(), MemberKind::User);
                }
            } else {
                let size = small_size / 2 + rng.below(small_size.max(1));
                let mut attempts = 0;
                while members.len() < size && attempts < size * 20 {
                    attempts += 1;
                    let pick = rng.below(users.len());
                    if department.is_some_and(|department| usize::from(departments[pick]) != department) {
                        continue;
                    }
                    members.insert(users[pick].as_str().into(), MemberKind::User);
                }
            }
        }
        // Nest an earlier group now and then; pointing only backwards keeps generated trees acyclic.
        if index >= 2 && index % 5 == 0 {
            let child = &ids[1 + rng.below(index - 1)];
            members.insert(child.as_str().into(), MemberKind::Group);
        }
        let created = crate::clock::iso(base_created + rng.below(1500 * 86_400) as i64);
        let group = Group {
            display_name: name.clone(),
            description: Some(format!("Members of {name}")),
            mail: unified.then(|| format!("{nickname}@{DOMAIN}")),
            mail_nickname: nickname,
            mail_enabled: unified,
            security_enabled: !unified,
            group_types: if unified {
                vec!["Unified".to_owned()]
            } else {
                Vec::new()
            },
            visibility: unified.then(|| "Private".to_owned()),
            created,
            members,
        };
        map.insert(ids[index].clone().into_boxed_str(), group);
    }
    map
}

#[cfg(test)]
mod tests {
    #[test]
    fn folds_names_to_ascii() {
        assert_eq!(super::ascii_fold("Øystein"), "oystein");
        assert_eq!(super::ascii_fold("O'Brien"), "obrien");
        assert_eq!(super::ascii_fold("Łukasiewicz"), "lukasiewicz");
    }

    #[test]
    fn ids_are_guid_shaped() {
        let id = super::guid(7);
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
    }
}
