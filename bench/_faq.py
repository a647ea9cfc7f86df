"""The corpus and paraphrase set of the serving benches, written for them by hand.

24 intents of a travel/retail customer-support FAQ. Each has:
- a document (``text``), and a second version (``changed``) in which its key fact
  changes (a number, a name) — the "source change" of the staleness measurement;
- a canonical question (what warms the cache);
- 3 paraphrases: the same intent in other words (synonyms, other syntax, informal).
Intents come in lexical near-pairs (cancel an order / cancel a subscription, refund to
a card / refund as store credit, lounge for gold / lounge guests, ...), so a paraphrase
of one is often close to the other: that is what makes a threshold cost precision.
``OUT_OF_SCOPE`` are questions no intent answers (a hit on them is a false hit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Intent:
    key: str
    title: str
    text: str
    changed: str
    question: str
    paraphrases: tuple[str, str, str]


def _i(key: str, title: str, text: str, changed: str, q: str, *p: str) -> Intent:
    assert len(p) == 3
    return Intent(key, title, text, changed, q, (p[0], p[1], p[2]))


INTENTS: tuple[Intent, ...] = (
    _i(
        "refund-card",
        "Card refunds",
        "Refunds to the original card are paid within 14 days of the return reaching us.",
        "Refunds to the original card are paid within 3 days of the return reaching us.",
        "How long does a refund to my card take?",
        "When will the money be back on my credit card after a return?",
        "How many days until a card refund arrives?",
        "I returned an item, how soon is my card refunded?",
    ),
    _i(
        "refund-credit",
        "Store credit",
        "Store credit for a return is issued within 1 hour and never expires.",
        "Store credit for a return is issued within 24 hours and expires after 2 years.",
        "How fast do I get store credit for a return?",
        "If I choose store credit instead of a refund, when do I get it?",
        "How quickly is a return converted into store credit?",
        "When does the store credit from my return show up?",
    ),
    _i(
        "cancel-order",
        "Cancelling an order",
        "An order can be cancelled free of charge until it is packed, usually within 2 hours.",
        "An order can be cancelled free of charge until it is packed, usually within 30 minutes.",
        "How do I cancel an order?",
        "Can I still cancel the order I placed this morning?",
        "What is the deadline to call off a purchase I just made?",
        "I want to stop my order before it ships, how?",
    ),
    _i(
        "cancel-subscription",
        "Cancelling a subscription",
        "The Plus subscription can be cancelled at any time from the account page; the month paid"
        " stays active.",
        "The Plus subscription can be cancelled with 30 days notice from the account page.",
        "How do I cancel my Plus subscription?",
        "How can I end my Plus membership?",
        "Where do I unsubscribe from the Plus plan?",
        "I no longer want Plus, how do I stop paying for it?",
    ),
    _i(
        "lounge-gold",
        "Lounge access",
        "Gold members may use the airport lounge free of charge before any flight.",
        "Gold members may use the airport lounge free of charge on long-haul flights only.",
        "Can gold members use the airport lounge?",
        "Does my gold status give me lounge access at the airport?",
        "As a gold card holder, am I allowed into the lounge?",
        "Is the airport lounge included with gold membership?",
    ),
    _i(
        "lounge-guest",
        "Lounge guests",
        "A lounge member may bring one guest; each further guest pays 35 euros.",
        "A lounge member may bring two guests; each further guest pays 45 euros.",
        "Can I bring a guest into the lounge?",
        "How many people can come with me to the lounge?",
        "Is my travel companion allowed in the lounge with me?",
        "What does it cost to take a friend into the airport lounge?",
    ),
    _i(
        "baggage-cabin",
        "Cabin baggage",
        "Cabin baggage may weigh up to 8 kg and measure 55 x 40 x 23 cm.",
        "Cabin baggage may weigh up to 10 kg and measure 56 x 45 x 25 cm.",
        "What is the cabin baggage allowance?",
        "How heavy can my carry-on bag be?",
        "What size of hand luggage can I take on board?",
        "Carry-on limits: weight and dimensions?",
    ),
    _i(
        "baggage-checked",
        "Checked baggage",
        "Each checked bag may weigh 23 kg; an extra bag costs 60 euros when booked online.",
        "Each checked bag may weigh 20 kg; an extra bag costs 75 euros when booked online.",
        "How much does an extra checked bag cost?",
        "What is the fee for a second suitcase in the hold?",
        "Price of adding one more checked bag online?",
        "I need another bag in the hold, what will I pay?",
    ),
    _i(
        "seat-change",
        "Changing seats",
        "Seats can be changed for free up to 24 hours before departure in the app.",
        "Seats can be changed for free up to 48 hours before departure in the app.",
        "Can I change my seat after booking?",
        "Is it possible to pick a different seat once I have booked?",
        "How late can I switch seats on my flight?",
        "I'd like another seat on my booked flight, can I do that?",
    ),
    _i(
        "flight-change",
        "Changing flights",
        "Flights can be moved to another date for a fee of 50 euros plus any fare difference.",
        "Flights can be moved to another date for a fee of 80 euros plus any fare difference.",
        "How much does it cost to change my flight date?",
        "What is the fee to rebook my flight for another day?",
        "Can I move my flight to a later date, and at what price?",
        "Changing the day of my trip: how much will it cost?",
    ),
    _i(
        "delivery-time",
        "Delivery times",
        "Standard delivery takes 3 to 5 working days; express delivery arrives the next day.",
        "Standard delivery takes 2 to 4 working days; express delivery arrives the same day.",
        "How long does delivery take?",
        "When will my parcel arrive with standard shipping?",
        "How many days for a package to be delivered?",
        "What are your shipping times?",
    ),
    _i(
        "delivery-free",
        "Free delivery",
        "Delivery is free for orders above 50 euros.",
        "Delivery is free for orders above 35 euros.",
        "When is delivery free?",
        "What is the minimum order for free shipping?",
        "How much do I need to spend to avoid delivery charges?",
        "Is there a threshold for free postage?",
    ),
    _i(
        "return-window",
        "Return window",
        "Items can be returned within 30 days of delivery, unworn and with their labels.",
        "Items can be returned within 60 days of delivery, unworn and with their labels.",
        "How long do I have to return an item?",
        "What is the deadline for sending something back?",
        "How many days after delivery can I still return a product?",
        "Until when can I return my purchase?",
    ),
    _i(
        "return-cost",
        "Return costs",
        "Returns by post cost 4 euros, deducted from the refund; returns in store are free.",
        "Returns by post cost 6 euros, deducted from the refund; returns in store are free.",
        "Do I have to pay for returns?",
        "Is sending a return by post free?",
        "How much is deducted when I return an item by mail?",
        "What does a postal return cost me?",
    ),
    _i(
        "points-earn",
        "Earning points",
        "Members earn 1 point per euro spent, and 2 points per euro on flights.",
        "Members earn 2 points per euro spent, and 3 points per euro on flights.",
        "How many loyalty points do I earn per euro?",
        "How are reward points calculated on my purchases?",
        "What is the points rate for each euro I spend?",
        "How fast do I collect loyalty points?",
    ),
    _i(
        "points-expire",
        "Points expiry",
        "Loyalty points expire 24 months after they were earned.",
        "Loyalty points expire 36 months after they were earned.",
        "When do my loyalty points expire?",
        "Do reward points have an expiry date?",
        "How long are my points valid?",
        "Will I lose my points if I don't use them?",
    ),
    _i(
        "password-reset",
        "Password reset",
        "Reset your password with the 'Forgot password' link; the emailed link is valid for"
        " 30 minutes.",
        "Reset your password with the 'Forgot password' link; the emailed link is valid for"
        " 10 minutes.",
        "How do I reset my password?",
        "I forgot my password, what should I do?",
        "How can I get a new password for my account?",
        "My login password doesn't work, how do I change it?",
    ),
    _i(
        "account-delete",
        "Deleting an account",
        "Accounts are deleted 14 days after a deletion request made in the privacy settings.",
        "Accounts are deleted 7 days after a deletion request made in the privacy settings.",
        "How do I delete my account?",
        "Can you remove all my data and close my account?",
        "How do I permanently close my profile?",
        "I want my account erased, how does that work?",
    ),
    _i(
        "pay-methods",
        "Payment methods",
        "We accept Visa, Mastercard, PayPal and bank transfer.",
        "We accept Visa, Mastercard, American Express and Apple Pay.",
        "Which payment methods do you accept?",
        "Can I pay with PayPal or a credit card?",
        "What ways of paying are available?",
        "Which cards can I use at checkout?",
    ),
    _i(
        "pay-installments",
        "Paying in instalments",
        "Orders above 200 euros can be paid in 3 interest-free instalments.",
        "Orders above 150 euros can be paid in 4 interest-free instalments.",
        "Can I pay in instalments?",
        "Is there an option to split the payment over several months?",
        "Do you offer interest-free monthly payments?",
        "Can I spread the cost of a big order?",
    ),
    _i(
        "pet-travel",
        "Travelling with pets",
        "Pets up to 8 kg, carrier included, may travel in the cabin for 60 euros.",
        "Pets up to 10 kg, carrier included, may travel in the cabin for 70 euros.",
        "Can I bring my pet on the plane?",
        "Is my small dog allowed to fly in the cabin with me?",
        "What are the rules for flying with a cat?",
        "How much is it to take an animal on board?",
    ),
    _i(
        "checkin-online",
        "Online check-in",
        "Online check-in opens 30 hours before departure and closes 2 hours before.",
        "Online check-in opens 48 hours before departure and closes 1 hour before.",
        "When does online check-in open?",
        "How early can I check in online for my flight?",
        "From what time can I do web check-in?",
        "When can I check in through the app?",
    ),
    _i(
        "gift-cards",
        "Gift cards",
        "Gift cards are valid for 12 months and can be used online and in store.",
        "Gift cards are valid for 24 months and can be used online only.",
        "How long is a gift card valid?",
        "Do gift vouchers expire?",
        "Until when can I spend my gift card?",
        "What is the validity period of a gift card?",
    ),
    _i(
        "price-match",
        "Price match",
        "If you find the same item cheaper within 7 days, we refund the difference.",
        "If you find the same item cheaper within 14 days, we refund the difference.",
        "Do you offer a price match?",
        "I saw this cheaper elsewhere after buying it, can you refund the difference?",
        "Will you match a lower price from another shop?",
        "Is there a price guarantee if the item gets cheaper?",
    ),
)

OUT_OF_SCOPE: tuple[str, ...] = (
    "What is the weather in Lyon tomorrow?",
    "Who won the football match last night?",
    "Can you recommend a good restaurant near the airport?",
    "What is the capital of Australia?",
    "How do I cook pasta?",
    "Do you sell electric bicycles?",
    "What are your shop opening hours on Sunday?",
    "Can I book a hotel through you?",
)


def documents(changed: frozenset[str] = frozenset()) -> dict[str, str]:
    """``file name → markdown``; intents in ``changed`` get their second version."""
    return {
        f"{i.key}.md": f"# {i.title}\n\n{i.changed if i.key in changed else i.text}\n"
        for i in INTENTS
    }
