//! A different domain served by a jetsource node using only the public API: the
//! order lifecycle (create, add item, confirm, ship, deliver, cancel).
//!
//! Run: `cargo run --example orders` (uses `NATS_URL` if set, otherwise starts a
//! disposable nats-server). It registers the aggregate with one line, sends a few
//! commands over plain NATS request/reply and prints each reply; it exits non-zero
//! if any reply is not what the lifecycle says it should be.

use jetsource::node::{Node, NodeConfig};
use jetsource::{Aggregate, DomainError, DomainEvent, EventStore, RefusalKind, StoreConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The commands: an externally tagged enum of struct variants (`cmd.order.<Variant>`).
#[derive(Debug, Clone, Deserialize)]
enum OrderCommand {
    Create {
        customer: String,
    },
    AddItem {
        sku: String,
        quantity: u32,
        unit_price_cents: u64,
    },
    Confirm {},
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
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

#[derive(Debug, Clone, Default, Serialize)]
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
            (Confirm {}, Stage::Open) if self.lines.is_empty() => return Err(OrderError::Empty),
            (Confirm {}, Stage::Open) => OrderEvent::OrderConfirmed {
                total_cents: self.lines.iter().map(|(_, q, p)| u64::from(*q) * p).sum(),
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let disposable;
    let url = match std::env::var("NATS_URL") {
        Ok(url) => url,
        Err(_) => {
            disposable = jetsource::testing::TestServer::start();
            disposable.url()
        }
    };
    let client = jetsource::connect(&url).await?;
    let store = EventStore::open(client.clone(), StoreConfig::default()).await?;
    // Registering an aggregate is one line.
    let node = Node::new(store, NodeConfig::default())
        .register::<Order>(Default::default())
        .start()
        .await?;

    let id = format!("order-{}", uuid::Uuid::now_v7().simple());
    let steps: [(&str, Value, &str); 8] = [
        ("Create", json!({"customer": "c-42"}), "accepted"),
        ("Confirm", json!({}), "rejected"),
        (
            "AddItem",
            json!({"sku": "tea", "quantity": 2, "unit_price_cents": 450}),
            "accepted",
        ),
        (
            "AddItem",
            json!({"sku": "cup", "quantity": 0, "unit_price_cents": 900}),
            "rejected",
        ),
        ("Confirm", json!({}), "accepted"),
        ("Ship", json!({"carrier": "post"}), "accepted"),
        ("Cancel", json!({"reason": "too late"}), "rejected"),
        ("Deliver", json!({}), "accepted"),
    ];
    for (command, mut body, expected) in steps {
        body["id"] = json!(id);
        let reply = client
            .request(
                format!("cmd.order.{command}"),
                serde_json::to_vec(&body)?.into(),
            )
            .await?;
        let reply: Value = serde_json::from_slice(&reply.payload)?;
        println!("cmd.order.{command:<8} {body}\n  -> {reply}");
        if reply["status"] != expected {
            return Err(format!("{command}: expected {expected}, got {reply}").into());
        }
    }
    let state = client
        .request(
            "qry.order.get",
            serde_json::to_vec(&json!({"id": id}))?.into(),
        )
        .await?;
    let state: Value = serde_json::from_slice(&state.payload)?;
    println!("qry.order.get -> {state}");
    if state["state"]["stage"] != "delivered" {
        return Err("the order should be delivered".into());
    }
    node.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
