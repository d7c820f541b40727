//! A second domain as its own app, on the public API alone: the order lifecycle
//! (create, add item, confirm, ship, deliver, cancel), a projection with a query
//! (`qry.orders.get`), and a saga with a deadline (an order not shipped in time is
//! cancelled).
//!
//! Run: `cargo run --example orders -- up --demo` (a local stack of this app, the
//! story told over plain NATS request/reply, then exit; non-zero if any reply is not
//! what the lifecycle says), or `-- up` and drive it yourself, or any other
//! subcommand (`-- --help`).

use chrono::{DateTime, Duration, Utc};
use jetsource::projection::query::{valid_id, Queries, QueryError, Rows};
use jetsource::projection::{ApplyError, Projection, View};
use jetsource::saga::{Input, Reaction, Saga, SagaCommand};
use jetsource::{
    decode_event, Aggregate, DomainError, DomainEvent, MalformedEvent, RecordedEvent, RefusalKind,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// The commands: an externally tagged enum of struct variants (`cmd.order.<Variant>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum OrderCommand {
    Create {
        customer: String,
    },
    AddItem {
        sku: String,
        quantity: u32,
        unit_price_cents: u64,
    },
    /// `at` is the node's clock when the command arrives.
    Confirm {
        ship_within_secs: u64,
        at: DateTime<Utc>,
    },
    Ship {
        carrier: String,
    },
    Deliver {},
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum OrderEvent {
    OrderCreated {
        customer: String,
    },
    ItemAdded {
        sku: String,
        quantity: u32,
        unit_price_cents: u64,
    },
    OrderConfirmed {
        total_cents: u64,
        ship_by: DateTime<Utc>,
    },
    OrderShipped {
        carrier: String,
    },
    OrderDelivered {},
    OrderCancelled {
        reason: String,
    },
}
impl DomainEvent for OrderEvent {}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    #[default]
    New,
    Open,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Order {
    stage: Stage,
    customer: String,
    lines: Vec<(String, u32, u64)>,
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("the order is {0:?}; that is not allowed now")]
    WrongStage(Stage),
    #[error("an order needs at least one item to be confirmed")]
    Empty,
    #[error("quantity must be at least 1")]
    BadQuantity,
}

impl DomainError for OrderError {
    fn code(&self) -> &'static str {
        match self {
            OrderError::WrongStage(_) => "wrong_stage",
            OrderError::Empty => "empty_order",
            OrderError::BadQuantity => "bad_quantity",
        }
    }
    fn kind(&self) -> RefusalKind {
        match self {
            OrderError::BadQuantity => RefusalKind::InvalidValue,
            _ => RefusalKind::Rule,
        }
    }
}

impl Aggregate for Order {
    const NAME: &'static str = "order";
    const CLOCK: Option<&'static str> = Some("at");
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderCommand::*;
        let wrong = || Err(OrderError::WrongStage(self.stage));
        Ok(vec![match (command, self.stage) {
            (Create { customer }, Stage::New) => OrderEvent::OrderCreated {
                customer: customer.clone(),
            },
            (AddItem { quantity: 0, .. }, _) => return Err(OrderError::BadQuantity),
            (
                AddItem {
                    sku,
                    quantity,
                    unit_price_cents,
                },
                Stage::Open,
            ) => OrderEvent::ItemAdded {
                sku: sku.clone(),
                quantity: *quantity,
                unit_price_cents: *unit_price_cents,
            },
            (Confirm { .. }, Stage::Open) if self.lines.is_empty() => {
                return Err(OrderError::Empty)
            }
            (
                Confirm {
                    ship_within_secs,
                    at,
                },
                Stage::Open,
            ) => OrderEvent::OrderConfirmed {
                total_cents: self.lines.iter().map(|(_, q, p)| u64::from(*q) * p).sum(),
                ship_by: *at + Duration::seconds((*ship_within_secs).min(86_400 * 365) as i64),
            },
            (Ship { carrier }, Stage::Confirmed) => OrderEvent::OrderShipped {
                carrier: carrier.clone(),
            },
            (Deliver {}, Stage::Shipped) => OrderEvent::OrderDelivered {},
            (Cancel { reason }, Stage::Open | Stage::Confirmed) => OrderEvent::OrderCancelled {
                reason: reason.clone(),
            },
            _ => return wrong(),
        }])
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderCreated { customer } => {
                self.stage = Stage::Open;
                self.customer = customer.clone();
            }
            OrderEvent::ItemAdded {
                sku,
                quantity,
                unit_price_cents,
            } => self.lines.push((sku.clone(), *quantity, *unit_price_cents)),
            OrderEvent::OrderConfirmed { .. } => self.stage = Stage::Confirmed,
            OrderEvent::OrderShipped { .. } => self.stage = Stage::Shipped,
            OrderEvent::OrderDelivered {} => self.stage = Stage::Delivered,
            OrderEvent::OrderCancelled { .. } => self.stage = Stage::Cancelled,
        }
    }
}

impl jetsource::snapshot::Snapshot for Order {}

/// Orders as rows `order.<id>`: customer, status, items, total, ship-by.
#[derive(Debug, Clone, Copy)]
struct OrderSummary;

impl Projection for OrderSummary {
    fn name(&self) -> &str {
        "order_summary"
    }

    fn aggregates(&self) -> &[&'static str] {
        &["order"]
    }

    fn queries(&self) -> Queries {
        Queries::on("orders").query("get", get_order)
    }

    fn apply(&self, view: &mut View, event: &RecordedEvent) -> Result<(), ApplyError> {
        let key = format!("order.{}", event.aggregate_id);
        let e = decode_event::<OrderEvent>(event).map_err(|m| ApplyError::Failed(m.to_string()))?;
        if let OrderEvent::OrderCreated { customer } = &e {
            let row = json!({"id": event.aggregate_id, "customer": customer, "status": "open", "items": 0, "total_cents": 0});
            view.put(&key, row);
            return Ok(());
        }
        let mut row = view
            .get(&key)?
            .cloned()
            .ok_or_else(|| ApplyError::Failed(format!("{key} changed before it was created")))?;
        match e {
            OrderEvent::OrderCreated { .. } => unreachable!("handled above"),
            OrderEvent::ItemAdded {
                quantity,
                unit_price_cents,
                ..
            } => {
                row["items"] = json!(row["items"].as_u64().unwrap_or(0) + u64::from(quantity));
                let line = u64::from(quantity) * unit_price_cents;
                row["total_cents"] = json!(row["total_cents"].as_u64().unwrap_or(0) + line);
            }
            OrderEvent::OrderConfirmed { ship_by, .. } => {
                row["status"] = json!("confirmed");
                row["ship_by"] = json!(ship_by);
            }
            OrderEvent::OrderShipped { carrier } => {
                row["status"] = json!("shipped");
                row["carrier"] = json!(carrier);
            }
            OrderEvent::OrderDelivered {} => row["status"] = json!("delivered"),
            OrderEvent::OrderCancelled { reason } => {
                row["status"] = json!("cancelled");
                row["reason"] = json!(reason);
            }
        }
        view.put(&key, row);
        Ok(())
    }
}

/// The body of `qry.orders.get`.
#[derive(Debug, Deserialize)]
struct ById {
    id: String,
}

/// `qry.orders.get {"id"}`: the order's row, 404 if there is none.
async fn get_order(rows: Rows, ById { id }: ById) -> Result<Value, QueryError> {
    let id = valid_id("id", &id)?;
    rows.get(&format!("order.{id}"))
        .await?
        .ok_or_else(|| QueryError::not_found(format!("no order {id}")))
}

/// Cancels an order not shipped by its ship-by time; one instance per order.
#[derive(Debug, Clone, Copy)]
struct Fulfilment;

impl Saga for Fulfilment {
    type State = String;

    fn name(&self) -> &str {
        "fulfilment"
    }

    fn aggregates(&self) -> &[&'static str] {
        &["order"]
    }

    fn correlate(&self, event: &RecordedEvent) -> Result<Option<String>, MalformedEvent> {
        Ok(matches!(
            event.event_type.as_str(),
            "OrderConfirmed" | "OrderShipped" | "OrderCancelled"
        )
        .then(|| event.aggregate_id.clone()))
    }

    fn react(&self, order: &String, input: Input<'_>) -> Reaction<String> {
        match input {
            Input::Event(event) => match decode_event::<OrderEvent>(event) {
                Ok(OrderEvent::OrderConfirmed { ship_by, .. }) => {
                    Reaction::to(event.aggregate_id.clone()).deadline("ship", ship_by)
                }
                Ok(OrderEvent::OrderShipped { .. }) => {
                    Reaction::to(order.clone()).cancel("ship").finish("shipped")
                }
                Ok(OrderEvent::OrderCancelled { .. }) => Reaction::to(order.clone())
                    .cancel("ship")
                    .finish("cancelled"),
                _ => Reaction::to(order.clone()),
            },
            Input::Deadline { .. } => {
                let cancel = OrderCommand::Cancel {
                    reason: "not shipped in time".into(),
                };
                Reaction::to(order.clone())
                    .send(SagaCommand::new::<Order>("cancel", order, &cancel))
            }
            // Shipped in the meantime: the cancel came too late, which is fine.
            Input::Refused { .. } => Reaction::to(order.clone()).finish("shipped meanwhile"),
        }
    }
}

fn main() -> std::process::ExitCode {
    jetsource::App::new("orders")
        .aggregate::<Order>()
        .projection(OrderSummary)
        .saga(Fulfilment)
        .demo(Arc::new(|nats, stack| Box::pin(demo(nats, stack))))
        .run()
}

/// One order shipped in time, one cancelled by the saga, told over plain NATS.
async fn demo(
    nats: async_nats::Client,
    stack: &mut jetsource::app::Stack,
) -> jetsource::app::Result<()> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let (shipped, late) = (format!("o-{run}-a"), format!("o-{run}-b"));
    let lines = [
        (
            shipped.as_str(),
            "Create",
            json!({"customer": "c-42"}),
            "accepted",
        ),
        (
            shipped.as_str(),
            "Confirm",
            json!({"ship_within_secs": 60}),
            "rejected",
        ),
        (
            shipped.as_str(),
            "AddItem",
            json!({"sku": "tea", "quantity": 2, "unit_price_cents": 450}),
            "accepted",
        ),
        (
            shipped.as_str(),
            "AddItem",
            json!({"sku": "cup", "quantity": 0, "unit_price_cents": 900}),
            "rejected",
        ),
        (
            shipped.as_str(),
            "Confirm",
            json!({"ship_within_secs": 60}),
            "accepted",
        ),
        (
            shipped.as_str(),
            "Ship",
            json!({"carrier": "post"}),
            "accepted",
        ),
        (
            late.as_str(),
            "Create",
            json!({"customer": "c-7"}),
            "accepted",
        ),
        (
            late.as_str(),
            "AddItem",
            json!({"sku": "pot", "quantity": 1, "unit_price_cents": 2500}),
            "accepted",
        ),
        (
            late.as_str(),
            "Confirm",
            json!({"ship_within_secs": 1}),
            "accepted",
        ),
    ];
    for (id, command, mut body, expected) in lines {
        body["id"] = json!(id);
        let reply = nats
            .request(format!("cmd.order.{command}"), body.to_string().into())
            .await?;
        let reply: Value = serde_json::from_slice(&reply.payload)?;
        println!("cmd.order.{command:<8} {body}\n  -> {reply}");
        if reply["status"] != expected {
            return Err(format!("{command}: expected {expected}, got {reply}").into());
        }
    }
    // The saga cancels the late one once its deadline passes; the view shows both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        stack.check()?;
        let ask = |id: &str| nats.request("qry.orders.get", json!({"id": id}).to_string().into());
        let (a, b) = (ask(&shipped).await?, ask(&late).await?);
        let (a, b): (Value, Value) = (
            serde_json::from_slice(&a.payload)?,
            serde_json::from_slice(&b.payload)?,
        );
        if a["status"] == "shipped" && b["status"] == "cancelled" {
            println!("qry.orders.get {shipped} -> {a}\nqry.orders.get {late} -> {b}");
            println!("the fulfilment saga cancelled the order not shipped in time.");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("after 60 s: {a} / {b}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
