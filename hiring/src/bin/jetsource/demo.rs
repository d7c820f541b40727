//! `jetsource up --demo`: the hiring story against the processes `up` started, told
//! step by step. One hire, one decline, one expiry, one race for the same position.

use chrono::Utc;
use hiring::{Organization, OrganizationCommand as Org, Person, PersonCommand};
use jetsource::app::{Result, Stack};
use jetsource::client::{Client, CommandOptions};
use jetsource::saga::instances;
use jetsource::EventStore;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Story<'a> {
    client: Client,
    store: EventStore,
    stack: &'a mut Stack,
    last_seq: u64,
}

/// Tells the story; an error names the step (or the process) that failed.
pub(crate) async fn run(nats: async_nats::Client, stack: &mut Stack) -> Result<()> {
    let store = EventStore::open(nats.clone(), Default::default()).await?;
    let client =
        Client::new(nats, jetsource::Subjects::default()).with_timeout(Duration::from_secs(10));
    let mut story = Story {
        client,
        store,
        stack,
        last_seq: 0,
    };
    story.tell().await
}

impl Story<'_> {
    async fn org(&mut self, command: Org) -> Result<()> {
        let ack = self
            .client
            .execute::<Organization>("acme", &command, &CommandOptions::default())
            .await?;
        println!(
            "  acme: {} -> {:?} (seq {})",
            name(&command),
            ack.events,
            ack.seq
        );
        self.last_seq = self.last_seq.max(ack.seq);
        Ok(())
    }

    async fn person(&mut self, id: &str, command: PersonCommand) -> Result<()> {
        let ack = self
            .client
            .execute::<Person>(id, &command, &CommandOptions::default())
            .await?;
        println!(
            "  {id}: {} -> {:?} (seq {})",
            name(&command),
            ack.events,
            ack.seq
        );
        self.last_seq = self.last_seq.max(ack.seq);
        Ok(())
    }

    async fn offer(
        &mut self,
        offer: &str,
        position: &str,
        person: &str,
        valid: chrono::Duration,
    ) -> Result<()> {
        self.org(Org::ExtendOffer {
            position_id: position.into(),
            person_id: person.into(),
            offer_id: offer.into(),
            expires_at: Utc::now() + valid,
            at: Utc::now(),
        })
        .await
    }

    /// Waits until the saga instance of `offer` reaches `stage` or finishes.
    async fn saga(&mut self, offer: &str, until_finished: bool, stage: &str) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.stack.check()?;
            if let Some(i) = instances::show(&self.store, "hiring", offer).await? {
                if i.outcome.is_some() || (!until_finished && i.state["stage"] == stage) {
                    let sent: Vec<String> = i
                        .log
                        .iter()
                        .flat_map(|e| e.sent.iter())
                        .map(|s| format!("{} ({})", s.command, s.reply))
                        .collect();
                    println!(
                        "  saga hiring.{offer}: {} ; sent: {}",
                        i.outcome
                            .as_deref()
                            .map(|o| format!("finished: {o}"))
                            .unwrap_or_else(|| format!(
                                "stage {}",
                                i.state["stage"].as_str().unwrap_or("?")
                            )),
                        sent.join(", ")
                    );
                    return Ok(serde_json::to_value(i)?);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the saga did not move offer {offer} in 60 s: see saga-hiring.log"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn tell(&mut self) -> Result<()> {
        let hour = chrono::Duration::hours(1);
        println!("1. Acme registers and opens four positions");
        self.org(Org::Register {
            name: "Acme".into(),
        })
        .await?;
        for (id, title) in [
            ("eng-1", "Engineer"),
            ("ops-1", "Operator"),
            ("des-1", "Designer"),
            ("eng-2", "Engineer"),
        ] {
            self.org(Org::OpenPosition {
                position_id: id.into(),
                title: title.into(),
            })
            .await?;
        }
        println!("2. Five people register");
        for (id, name) in [
            ("ada", "Ada Lovelace"),
            ("bob", "Bob Kahn"),
            ("cyd", "Cyd Charisse"),
            ("dee", "Dee Snider"),
            ("eve", "Eve Arden"),
        ] {
            self.person(
                id,
                PersonCommand::Register {
                    name: name.into(),
                    email: format!("{id}@example.org"),
                },
            )
            .await?;
        }
        println!("3. Acme extends offers; the saga records each on the person");
        self.offer("offer-ada", "eng-1", "ada", hour).await?;
        self.offer("offer-bob", "ops-1", "bob", hour).await?;
        self.offer("offer-cyd", "des-1", "cyd", chrono::Duration::seconds(4))
            .await?;
        self.offer("offer-dee", "eng-2", "dee", hour).await?;
        self.offer("offer-eve", "eng-2", "eve", hour).await?;
        for offer in [
            "offer-ada",
            "offer-bob",
            "offer-cyd",
            "offer-dee",
            "offer-eve",
        ] {
            self.saga(offer, false, "recorded").await?;
        }
        println!("4. Ada accepts: hire (position filled + member joined), then employment");
        self.person(
            "ada",
            PersonCommand::AcceptOffer {
                offer_id: "offer-ada".into(),
                at: Utc::now(),
            },
        )
        .await?;
        self.saga("offer-ada", true, "").await?;
        println!("5. Bob declines: the organization withdraws the offer");
        self.person(
            "bob",
            PersonCommand::DeclineOffer {
                offer_id: "offer-bob".into(),
            },
        )
        .await?;
        self.saga("offer-bob", true, "").await?;
        println!("6. Dee and Eve accept offers for the same position at the same moment");
        let dee = PersonCommand::AcceptOffer {
            offer_id: "offer-dee".into(),
            at: Utc::now(),
        };
        let eve = PersonCommand::AcceptOffer {
            offer_id: "offer-eve".into(),
            at: Utc::now(),
        };
        let options = CommandOptions::default();
        let (a, b) = tokio::join!(
            self.client.execute::<Person>("dee", &dee, &options),
            self.client.execute::<Person>("eve", &eve, &options),
        );
        for (who, r) in [("dee", a), ("eve", b)] {
            match r {
                Ok(ack) => {
                    println!("  {who}: AcceptOffer -> {:?} (seq {})", ack.events, ack.seq);
                    self.last_seq = self.last_seq.max(ack.seq);
                }
                Err(e) => println!("  {who}: AcceptOffer -> {e}"),
            }
        }
        let dee = self.saga("offer-dee", true, "").await?;
        let eve = self.saga("offer-eve", true, "").await?;
        let outcomes = [dee["outcome"].as_str(), eve["outcome"].as_str()];
        if !(outcomes.contains(&Some("hired")) && outcomes.contains(&Some("rescinded"))) {
            return Err(format!(
                "the race should end with one hire and one rescinded offer, not {outcomes:?}"
            )
            .into());
        }
        println!("7. Cyd does not answer: the deadline passes and the offer expires on both sides");
        let cyd = self.saga("offer-cyd", true, "").await?;
        if cyd["outcome"] != "expired" {
            return Err(format!("cyd's offer should expire, not {}", cyd["outcome"]).into());
        }
        let seq = self.store.last_seq().await?;
        println!("8. The views (read with Jetsource-Min-Seq {seq}: they have caught up)");
        let acme = self
            .client
            .query_after("organization", "get", &json!({"id": "acme"}), seq)
            .await?;
        println!("  qry.organization.get acme -> {acme}");
        for id in ["ada", "bob", "cyd", "dee", "eve"] {
            let offers = self
                .client
                .query_after("offers", "by_person", &json!({"id": id}), seq)
                .await?;
            println!("  qry.offers.by_person {id} -> {offers}");
        }
        let people = self
            .client
            .query_after("person", "list", &json!({}), seq)
            .await?;
        println!("  qry.person.list -> {people}");
        println!("\nsagas: jetsource sagas list hiring; events: jetsource events person ada");
        println!("the demo ran to the end.");
        Ok(())
    }
}

/// The command's variant name, for the story.
fn name<C: serde::Serialize>(command: &C) -> String {
    jetsource::client::command_body("-", command)
        .map(|(name, _)| name)
        .unwrap_or_default()
}
